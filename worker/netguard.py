"""Where a webhook may point: public addresses only, unless an operator allows a network (SSRF guard).

A webhook URL is a client's input that makes the worker open connections, so a client could aim it
at the deployment's own insides: Redis on loopback, a metadata service on 169.254.169.254, a private
admin page. :func:`refusal` names the rule an address breaks (loopback, private, link-local, CGNAT,
multicast, unspecified, reserved, IPv6 unique-local; an IPv6 address carrying an IPv4 one, mapped,
NAT64 or 6to4, is judged as that IPv4 address) unless ``CALLTRACK_WEBHOOK_ALLOWED_NETWORKS`` holds
it. :func:`resolve` looks a host up once and checks every address it has: the caller connects to the
address returned, never to the name again, so a name cannot answer a public address to the check and
a private one to the connection (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class TargetRefused(ValueError):
    """The webhook target is not allowed; the text names the rule (and the address), never the URL."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked webhook target: connect to ``address``; ``host`` stays the Host header and TLS name."""

    scheme: str
    host: str
    port: int
    address: str


def _embedded(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries: IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 (2002::/16)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _rule(ip: IPAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded(ip)) is not None:
        return _rule(inner)
    checks: tuple[tuple[bool, str], ...] = (
        (ip.is_loopback, "loopback"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_link_local, "link-local (incl. cloud metadata 169.254.169.254)"),
        (ip.is_multicast, "multicast"),
        (ip in CGNAT, "shared address space (CGNAT 100.64.0.0/10)"),
        (ip in UNIQUE_LOCAL, "IPv6 unique-local (fc00::/7)"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "IPv6 site-local"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not a public address"),
    )
    return next((rule for broken, rule in checks if broken), None)


def refusal(ip: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """The rule ``ip`` breaks (None: a public address, or one inside an allowed network)."""
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    mapped = _embedded(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    if mapped is not None and any(net.version == 4 and mapped in net for net in allowed):
        return None
    return _rule(ip)


def split(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; ``TargetRefused`` when it has none."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise TargetRefused("has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("must be an http(s) URL with a host")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def check_static(url: str, allowed: Sequence[IPNetwork] = ()) -> None:
    """What can be said without DNS: a literal address's rule, and ``localhost`` names (always loopback)."""
    _, host, _ = split(url)
    ip = literal(host)
    name = host.rstrip(".").lower()
    loopback = ipaddress.ip_address("127.0.0.1")
    if ip is None and (name == "localhost" or name.endswith(".localhost")) and (why := refusal(loopback, allowed)):
        raise TargetRefused(f"names localhost, which is {why}")
    if ip is not None and (why := refusal(ip, allowed)) is not None:
        raise TargetRefused(f"points to {ip}, which is {why}")


_lookups: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool): a forked child makes its own


def _getaddrinfo(host: str, port: int, timeout: float | None) -> list[Any]:
    """``socket.getaddrinfo`` within ``timeout`` seconds (it has no timeout of its own): run in a small
    pool of threads; a look-up still hanging is left to finish there, ``TimeoutError`` raised here."""
    global _lookups  # noqa: PLW0603 - one pool per process
    if timeout is None:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    if _lookups is None or _lookups[0] != os.getpid():
        _lookups = (os.getpid(), ThreadPoolExecutor(max_workers=4, thread_name_prefix="netguard-dns"))
    future = _lookups[1].submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    try:
        return future.result(timeout=max(timeout, 0.0))
    except FutureTimeout:
        future.cancel()
        raise TimeoutError("the name did not resolve in time") from None


def resolve(url: str, allowed: Sequence[IPNetwork] = (), *, timeout: float | None = None) -> Target:
    """Look the host up once (within ``timeout`` seconds) and check every address it has; the first is the
    one to connect to.

    Raises ``TargetRefused`` naming the rule when any address is refused, ``TimeoutError`` when the
    look-up took too long and ``OSError`` when the name does not resolve.
    """
    check_static(url, allowed)
    scheme, host, port = split(url)
    ip = literal(host)
    if ip is not None:
        return Target(scheme, host, port, str(ip))
    infos = _getaddrinfo(host, port, timeout)
    addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
    if not addresses:
        raise OSError("the name has no address")
    for address in addresses:
        if (why := refusal(address, allowed)) is not None:
            raise TargetRefused(f"resolves to {address}, which is {why}")
    return Target(scheme, host, port, str(addresses[0]))
