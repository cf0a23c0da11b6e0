"""uvicorn's httptools protocol with the bounds uvicorn lacks: a request head's deadline and exact size,
and per-client-address caps on open connections and unfinished heads (issue 22).

uvicorn bounds connections and requests of the whole process (``limit_concurrency``, 503 beyond) but
not per client: 1,005 unfinished heads from one address filled that limit and every other client was
answered 503 until the header deadline closed them. Here each peer address may hold at most
``ingest_max_connections_per_client`` open connections and ``ingest_max_unfinished_heads_per_client``
requests whose head has not arrived yet (an IPv6 peer counts as its /64: one host holds a whole
/64); a connection past either cap is answered 503 with
``Connection: close`` and closed at once, before anything of it is parsed, so one address's flood
costs only that address. The caps are per process (each uvicorn worker counts its own connections).

The peer is the TCP peer, never ``X-Forwarded-For``: nothing of the request has been read when a
connection is counted. Behind a proxy every client shares the proxy's address, so a peer in
``ingest_trusted_proxies`` has its own cap, ``ingest_proxy_max_connections`` (0, the default: no
per-peer cap; the proxy is expected to cap its own clients).

The head (request line, headers and the blank line that ends them) is at most :data:`MAX_HEAD_BYTES`
exactly: a head of that size is served, one byte more is answered 400 before the parser sees it.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from dataclasses import dataclass
from functools import cache

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from config.settings import load_settings

log = structlog.get_logger(__name__)

# The most bytes of one request's head (request line, headers and the blank line) a client may send.
MAX_HEAD_BYTES = 16 * 1024
_TERMINATORS = (b"\r\n\r\n", b"\n\n")
_BUSY_TEXT = b"Too many connections from this address.\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nretry-after: 10\r\nconnection: close\r\n\r\n%s" % (len(_BUSY_TEXT), _BUSY_TEXT)
)


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    header_timeout: float
    max_connections: int
    max_heads: int
    proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    proxy_cap: int

    def client(self, peer: str) -> tuple[str, int, int]:
        """Who the peer counts as (its IPv4 address, or its IPv6 /64: one host holds a whole /64), and
        the (connections, unfinished heads) it may hold; 0 is no cap."""
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return peer, self.max_connections, self.max_heads
        if any(address.version == net.version and address in net for net in self.proxies):
            return peer, self.proxy_cap, self.proxy_cap
        if address.version == 6 and address.ipv4_mapped is None:
            peer = str(ipaddress.ip_network(f"{address}/64", strict=False))
        return peer, self.max_connections, self.max_heads


@cache
def edge_limits() -> EdgeLimits:
    s = load_settings()
    return EdgeLimits(
        header_timeout=s.ingest_header_timeout,
        max_connections=s.ingest_max_connections_per_client,
        max_heads=s.ingest_max_unfinished_heads_per_client,
        proxies=tuple(s.ingest_trusted_proxies),
        proxy_cap=s.ingest_proxy_max_connections,
    )


# Per peer address, in this process: open connections, requests whose head is still arriving, and
# the peers whose refusal was logged (once until their connections are all closed: a flood is one line).
_open: Counter[str] = Counter()
_heads: Counter[str] = Counter()
_logged: set[str] = set()


def _release(tally: Counter[str], peer: str) -> None:
    tally[peer] -= 1
    if tally[peer] <= 0:
        del tally[peer]
        if tally is _open:
            _logged.discard(peer)


def head_end(tail: bytes, data: bytes) -> int:
    """Where in ``data`` the head ends (just after its blank line), ``tail`` being the head's last bytes
    before ``data``; -1 when it does not end in ``data``."""
    joined = tail + data
    ends = [found + len(mark) for mark in _TERMINATORS if (found := joined.find(mark)) >= 0]
    return min(ends) - len(tail) if ends else -1


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (a C parser: issue 18 measured a quarter more single-call requests
    per second than with h11) with the bounds of the module docstring."""

    _header_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _head_tail = b""
    _peer = ""
    _max_heads = 0
    _counted = False
    _in_head = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer, max_connections, self._max_heads = edge_limits().client(self.client[0] if self.client else "")
        if max_connections and _open[self._peer] >= max_connections:
            self._refuse("connections")
            return
        _open[self._peer] += 1
        self._counted = True
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        new_request = self._header_timer is None and (self.cycle is None or self.cycle.response_complete)
        if new_request and not self._arm_header_timer():  # a new request on a kept-alive connection
            return
        in_head = self._header_timer is not None
        if in_head:
            end = head_end(self._head_tail, data)
            size = self._head_bytes + (end if end >= 0 else len(data))
            if size > MAX_HEAD_BYTES:
                self._disarm_header_timer()
                self.send_400_response("Request head too large.")
                return
        super().data_received(data)
        if in_head and self._header_timer is not None:  # the head is still not complete after this data
            self._head_bytes += len(data)
            self._head_tail = (self._head_tail + data)[-3:]
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self._disarm_header_timer()  # leading blank lines hid where it starts: counted whole
                self.send_400_response("Request head too large.")

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        if self._counted:
            self._counted = False
            _release(_open, self._peer)
        super().connection_lost(exc)

    def _arm_header_timer(self) -> bool:
        """Start a request head's clock; False (and the connection refused) past the peer's head cap."""
        if self._max_heads and _heads[self._peer] >= self._max_heads:
            self._refuse("unfinished heads")
            return False
        self._head_bytes = 0
        self._head_tail = b""
        self._in_head = True
        _heads[self._peer] += 1
        self._header_timer = self.loop.call_later(edge_limits().header_timeout, self._headers_overdue)
        return True

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._in_head:
            self._in_head = False
            _release(_heads, self._peer)

    def _headers_overdue(self) -> None:
        self._header_timer = None
        self._disarm_header_timer()
        if not self.transport.is_closing():
            self.transport.close()  # the request's head was not complete in time

    def _refuse(self, what: str) -> None:
        if not self.transport.is_closing():
            if self._peer not in _logged:
                _logged.add(self._peer)
                log.warning("client_cap_refused", client=self._peer, cap=what)
            self.transport.write(_BUSY)
            self.transport.close()
