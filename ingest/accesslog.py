"""One structlog line per HTTP request (event ``http_request``), JSON like the workers' logs.

Fields: ``method``, ``path`` (never the query string: an OAuth callback's ``code`` or a provider's
signature would otherwise be logged), ``status``, ``duration_ms`` (from the first byte of the
request to the end of the answer), ``client`` (the socket's peer: the proxy's address behind one).
uvicorn's own access log stays off; its error logger goes through the same renderer
(``config/logging.py``).
"""

from __future__ import annotations

import logging
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("calltrack.access")
_LEVEL = logging.getLogger("calltrack.access")  # the standard library logger the line goes to

PATH_LIMIT = 200  # a path is the client's text: a long one is cut


class AccessLog:
    """ASGI middleware: logs every HTTP request once its answer is sent (or the app failed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The level is checked first: below INFO (CALLTRACK_LOG_LEVEL=WARNING) the line would be
            # built and time-stamped by structlog only to be dropped by the standard library.
            if _LEVEL.isEnabledFor(logging.INFO):
                self._log(scope, status, started)

    @staticmethod
    def _log(scope: Scope, status: int, started: float) -> None:
        client = scope.get("client")
        log.info(
            "http_request",
            method=scope.get("method", ""),
            path=str(scope.get("path", ""))[:PATH_LIMIT],
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            client=f"{client[0]}:{client[1]}" if client else None,
        )
