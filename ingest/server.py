"""The process entry: settings from the environment, logging, the app, uvicorn with slow-client limits.

uvicorn bounds idle keep-alive connections and, with ``limit_concurrency``, connections and requests
at once; it has no limit on how long a client may take to send a request, nor per client. More bounds
close that:

* :class:`ingest.protocol.GuardedHttpToolsProtocol` closes a connection whose request headers are not
  complete within ``ingest_header_timeout`` (slowloris: headers sent a byte at a time, or never
  finished), answers 400 to a request head over :data:`ingest.protocol.MAX_HEAD_BYTES` (exactly), and
  answers 503 and closes a connection past its address's caps on open connections and unfinished
  heads (``ingest_max_connections_per_client``, ``ingest_max_unfinished_heads_per_client``);
* :class:`BodyDeadline` gives a request's body ``ingest_body_timeout`` from its first read: past it,
  the read raises :class:`ingest.edge.BodyTimeout`, answered 408 with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.logging import configure_logging
from config.settings import Settings, load_settings
from ingest.accesslog import AccessLog
from ingest.app import create_app
from ingest.edge import BodyTimeout, ExposureError, check_exposure
from ingest.protocol import GuardedHttpToolsProtocol
from worker.app import refuse_another_shard_count


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
            if state["deadline"] <= loop.time():
                raise BodyTimeout
            try:
                # asyncio.timeout_at, not wait_for: no task of its own per read (issue 26).
                async with asyncio.timeout_at(state["deadline"]):
                    message = await receive()
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
    return AccessLog(BodyDeadline(create_app(settings), settings.ingest_body_timeout))


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
        access_log=False,  # ingest/accesslog.py logs each request (with its duration) as JSON
        log_config=None,  # uvicorn's loggers go through config/logging.py's structlog renderer
        **uvicorn_options(settings),
    )
