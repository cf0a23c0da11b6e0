"""The process entry: settings from the environment, logging, the app, uvicorn with slow-client limits.

uvicorn bounds idle keep-alive connections and, with ``limit_concurrency``, connections and requests
at once; it has no limit on how long a client may take to send a request. Two more bounds close that:

* :class:`GuardedHttpToolsProtocol` closes a connection whose request headers are not complete within
  ``ingest_header_timeout`` (slowloris: headers sent a byte at a time, or never finished), and
  answers 400 to a request head over :data:`MAX_HEAD_BYTES`;
* :class:`BodyDeadline` gives a request's body ``ingest_body_timeout`` from its first read: past it,
  the read raises :class:`ingest.edge.BodyTimeout`, answered 408 with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import sys
from functools import cache
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from config.logging import configure_logging
from config.settings import Settings, load_settings
from ingest.app import create_app
from ingest.edge import BodyTimeout, ExposureError, check_exposure
from worker.app import refuse_another_shard_count


@cache
def _header_timeout() -> float:
    return load_settings().ingest_header_timeout


# The most bytes of one request's head (request line and headers) a client may send.
MAX_HEAD_BYTES = 16 * 1024


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (a C parser: issue 18 measured a quarter more single-call requests
    per second than with h11) with two bounds on each request's head: complete within
    ``ingest_header_timeout`` (slowloris: headers sent a byte at a time, or never finished), and at
    most :data:`MAX_HEAD_BYTES` (httptools itself would collect headers without a limit)."""

    _header_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_header_timer()  # a new request on a kept-alive connection
        in_head = self._header_timer is not None
        super().data_received(data)
        if in_head and self._header_timer is not None:  # the head is still not complete after this data
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self._disarm_header_timer()
                self.send_400_response("Request head too large.")

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._head_bytes = 0
        self._header_timer = self.loop.call_later(_header_timeout(), self._headers_overdue)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()  # the request's head was not complete in time


class BodyDeadline:
    """ASGI middleware: a request's body must arrive within ``timeout`` seconds of its first read."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        state: dict[str, Any] = {"deadline": None, "done": False}

        async def timed() -> Message:
            if state["done"]:
                return await receive()
            if state["deadline"] is None:
                state["deadline"] = loop.time() + self.timeout
            try:
                message = await asyncio.wait_for(receive(), max(0.0, state["deadline"] - loop.time()))
            except TimeoutError:
                raise BodyTimeout from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["done"] = True
            return message

        await self.app(scope, timed, send)


def make_app() -> ASGIApp:
    """uvicorn's factory: one app (one Redis client) per worker process."""
    settings = load_settings()
    configure_logging(settings)
    return BodyDeadline(create_app(settings), settings.ingest_body_timeout)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The server's limits (see the module docstring); X-Forwarded-* are read by ingest/edge.py only."""
    return {
        "http": GuardedHttpToolsProtocol,
        "timeout_keep_alive": settings.ingest_keepalive_timeout,
        "limit_concurrency": settings.ingest_limit_concurrency,
        "backlog": 2048,
        "proxy_headers": False,
        "server_header": False,
    }


def serve(host: str | None = None, port: int | None = None, workers: int = 1) -> None:
    settings = load_settings()
    configure_logging(settings)
    address = host or settings.ingest_host
    try:
        check_exposure(settings, address)
    except ExposureError as error:
        sys.stderr.write(f"calltrack ingest: {error}\n")
        raise SystemExit(2) from None
    refuse_another_shard_count(settings)
    uvicorn.run(
        "ingest.server:make_app",
        factory=True,
        host=address,
        port=port or settings.ingest_port,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=False,
        **uvicorn_options(settings),
    )
