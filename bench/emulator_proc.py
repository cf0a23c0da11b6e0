"""The Metrica emulator in its own process, with a stopwatch on upload requests.

``python -m bench.emulator_proc --port P --quotas JSON`` serves the project's emulator app wrapped in
a small ASGI layer that records, for every upload request, the wall-clock time (``time.time()``) at
which the request reached the server and the time its answer was sent, keyed by the upload's
``comment`` (the batch id). ``GET /_bench/uploads`` returns them. The benchmark uses the first as
"upload request" time for the enqueue-to-upload latency, and the last answer as the end of a run.
Both clocks are the same machine's, so they compare with the producers' stamps directly.
"""

from __future__ import annotations

import argparse
import time
from typing import Any
from urllib.parse import parse_qs

import orjson
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from emulator.app import create_app
from emulator.config import Account, EmulatorConfig, QuotaConfig

UPLOAD_SUFFIXES = ("/upload_calls", "/upload")


class UploadClock:
    """ASGI wrapper: times upload requests by comment, serves them at ``/_bench/uploads``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.arrived: dict[str, float] = {}
        self.answered: dict[str, list[float]] = {}  # comment -> [answer time, HTTP status]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/_bench/uploads":
            body = orjson.dumps({"arrived": self.arrived, "answered": self.answered})
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["method"] != "POST" or not path.endswith(UPLOAD_SUFFIXES):
            await self.app(scope, receive, send)
            return
        arrived = time.time()
        query = parse_qs(scope.get("query_string", b"").decode())
        comment = query.get("comment", [""])[0]
        self.arrived.setdefault(comment, arrived)
        status = 0

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False) and status == 200:
                self.answered[comment] = [time.time(), status]

        await self.app(scope, receive, timed_send)


def bench_token(account: int) -> str:
    """The emulator's token of the benchmark's account ``account`` (made up; not a secret)."""
    return f"bench-token-{account}"


def bench_config(
    *, requests_per_ip_per_second: int | None, daily_per_login: int | None, accounts: int = 0
) -> EmulatorConfig:
    """Metrica's quotas as the benchmark sets them (see ``bench/stack.py`` for why); ``accounts`` logins
    ``bench-login-<i>`` with their tokens, besides the demo token."""
    logins = tuple(Account(bench_token(i), f"bench-login-{i}") for i in range(accounts))
    return EmulatorConfig(
        accounts=(*EmulatorConfig().accounts, *logins),
        step_seconds=1.0,
        quotas=QuotaConfig(
            requests_per_ip_per_second=requests_per_ip_per_second,
            parallel_requests_per_login=3,
            requests_per_login_per_day=daily_per_login,
        ),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator_proc")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rps-per-ip", type=int, default=30, help="0 disables Metrica's per-IP quota")
    parser.add_argument("--daily-per-login", type=int, default=0, help="0 disables the daily quota")
    parser.add_argument("--accounts", type=int, default=0, help="logins bench-login-<i> with tokens bench-token-<i>")
    args = parser.parse_args(argv)
    config = bench_config(
        requests_per_ip_per_second=args.rps_per_ip or None,
        daily_per_login=args.daily_per_login or None,
        accounts=args.accounts,
    )
    app = UploadClock(create_app(config))
    uvicorn.run(app, host="127.0.0.1", port=args.port, lifespan="off", access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
