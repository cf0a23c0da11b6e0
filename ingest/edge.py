"""The service's edge: who the client is, who may call what, and bodies read within their limits.

* :func:`client_address`: the peer, or behind trusted proxies (``ingest_trusted_proxies``) the
  rightmost ``X-Forwarded-For`` hop that is not one of them (a client can prepend any hops it likes,
  never append past our own proxy).
* :func:`check_exposure`: the service refuses to start on a non-loopback address without
  ``ingest_api_token`` unless ``ingest_allow_anonymous`` says so (logged as a warning).
* :func:`read_body` and :func:`ndjson_lines`: ``Content-Length`` checked first, then every chunk
  counted as it arrives; NDJSON is split into lines on the way, with the line count, line length
  and total size enforced before the next chunk is read. Nothing holds more than the limit.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Sequence
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import structlog
from starlette.requests import Request

from config.settings import Settings

log = structlog.get_logger(__name__)
Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address


class BodyTooLarge(Exception):
    """The body is over a limit of its endpoint; ``what`` names the limit."""

    def __init__(self, what: str = "the body is larger than this endpoint accepts") -> None:
        super().__init__(what)


class BodyTimeout(Exception):
    """The client did not send the body within ``ingest_body_timeout`` (answered 408, connection closed)."""

    def __init__(self) -> None:
        super().__init__("the body did not arrive in time")


class ExposureError(Exception):
    """The service would serve the generic API anonymously beyond loopback."""


@lru_cache(maxsize=4096)  # per request (the peer, X-Forwarded-For hops): a client's address repeats
def parse_address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def in_networks(address: Address | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address.version == net.version and address in net for net in networks)


def is_loopback_host(host: str) -> bool:
    """``host`` (an address or ``localhost``) only reaches this machine."""
    if host == "localhost":
        return True
    address = parse_address(host)
    return address is not None and address.is_loopback


def client_address(request: Request, trusted: Sequence[Network]) -> str:
    """The client's address: the peer, or the rightmost X-Forwarded-For hop that is not a trusted proxy."""
    peer = request.client.host if request.client else ""
    if not trusted or not in_networks(parse_address(peer), trusted):
        return peer or "unknown"
    hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            return "invalid"  # a malformed hop our own proxy did not write: one shared bucket
        if not in_networks(address, trusted):
            return str(address)
    return peer


@lru_cache(maxsize=4096)
def network_of(address: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) that holds ``address``; the text itself when it is no address."""
    parsed = parse_address(address)
    if parsed is None:
        return address
    prefix = 24 if parsed.version == 4 else 64
    return str(ipaddress.ip_network(f"{parsed}/{prefix}", strict=False))


def check_exposure(settings: Settings, host: str) -> None:
    """Refuse to serve the generic API anonymously beyond loopback; warn when explicitly allowed."""
    if settings.ingest_api_token is not None or is_loopback_host(host):
        return
    if not settings.ingest_allow_anonymous:
        raise ExposureError(
            f"the ingestion service would listen on {host} without CALLTRACK_INGEST_API_TOKEN: anyone could post "
            "calls and conversions; set the token, or CALLTRACK_INGEST_ALLOW_ANONYMOUS=true to accept that"
        )
    log.warning("ingest_api_anonymous", host=host, why="CALLTRACK_INGEST_ALLOW_ANONYMOUS is set")


def _declared_over(request: Request, limit: int) -> bool:
    declared = request.headers.get("content-length", "").strip()
    return declared.isdigit() and int(declared) > limit


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused as soon as its declared or counted size is over ``limit``."""
    if _declared_over(request, limit):
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def ndjson_lines(
    request: Request, *, max_bytes: int, max_line: int, max_lines: int
) -> AsyncIterator[tuple[int, bytes]]:
    """(line number, line) of each non-blank line, as the body streams in; limits enforced on the way."""
    if _declared_over(request, max_bytes):
        raise BodyTooLarge
    size = 0
    count = 0
    pending = b""
    number = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge
        pending += chunk
        lines = pending.split(b"\n")
        pending = lines.pop()
        if len(pending) > max_line:
            raise BodyTooLarge(f"a line is longer than {max_line} bytes")
        for line in lines:
            number += 1
            if len(line) > max_line:
                raise BodyTooLarge(f"line {number} is longer than {max_line} bytes")
            if line.strip():
                count += 1
                if count > max_lines:
                    raise BodyTooLarge(f"the body has more than {max_lines} lines")
                yield number, line
    if pending.strip():
        number += 1
        count += 1
        if count > max_lines:
            raise BodyTooLarge(f"the body has more than {max_lines} lines")
        yield number, pending
