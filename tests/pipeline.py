"""A running pipeline for tests: the emulator over HTTP, a real Celery worker and a real beat."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from celery.beat import EmbeddedService, _Threaded
from celery.contrib.testing.worker import start_worker

from config.settings import Settings
from emulator.config import EmulatorConfig, QuotaConfig
from emulator.server import RunningEmulator, start_in_thread
from worker.app import CalltrackCelery, create_app


@contextmanager
def running_emulator(step_seconds: float = 0.2, **changes: object) -> Iterator[RunningEmulator]:
    """The emulator in a thread; strict (refusing what no reference page documents) when the environment
    sets ``CALLTRACK_TEST_EMULATOR_STRICT=1``, unless a test asks otherwise."""
    strict = os.environ.get("CALLTRACK_TEST_EMULATOR_STRICT", "").lower() in {"1", "true", "yes"}
    config = EmulatorConfig(
        step_seconds=step_seconds, quotas=QuotaConfig(requests_per_ip_per_second=None), strict=strict
    )
    with start_in_thread(config.with_changes(**changes)) as emulator:
        yield emulator


@contextmanager
def running_worker(
    settings: Settings, tmp_path: Path, *, concurrency: int = 4, beat: bool = True
) -> Iterator[CalltrackCelery]:
    """A Celery worker (thread pool) and, unless told otherwise, an embedded beat, on ``settings``."""
    app = create_app(settings)
    app.conf.beat_schedule_filename = str(tmp_path / "beat-schedule")
    with start_worker(app, pool="threads", concurrency=concurrency, perform_ping_check=False, loglevel="WARNING"):
        # The deployment's scheduler (redbeat's, ours): an embedded Service would otherwise run celery's
        # file-based PersistentScheduler, which no deployment runs.
        service = (
            cast(_Threaded, EmbeddedService(app, thread=True, scheduler_cls=app.conf.beat_scheduler)) if beat else None
        )
        if service is not None:
            service.start()
        try:
            yield app
        finally:
            if service is not None:
                service.stop()
    app.runtime().close()


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """An ASGI app over real HTTP (uvicorn in a thread, a free port); yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # As ingest/server.py: X-Forwarded-For is read by the app (ingest/edge.py), never by uvicorn.
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, proxy_headers=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def running_ingest(settings: Settings) -> Iterator[str]:
    """The ingestion service over real HTTP; yields its base URL."""
    from ingest.app import create_app as create_ingest_app

    with serving(create_ingest_app(settings)) as url:
        yield url
