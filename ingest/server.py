"""The process entry: settings from the environment, logging, the app, uvicorn."""

from __future__ import annotations

import uvicorn
from starlette.applications import Starlette

from config.logging import configure_logging
from config.settings import load_settings
from ingest.app import create_app
from worker.app import refuse_another_shard_count


def make_app() -> Starlette:
    """uvicorn's factory: one app (one Redis client) per worker process."""
    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)


def serve(host: str | None = None, port: int | None = None, workers: int = 1) -> None:
    settings = load_settings()
    refuse_another_shard_count(settings)
    uvicorn.run(
        "ingest.server:make_app",
        factory=True,
        host=host or settings.ingest_host,
        port=port or settings.ingest_port,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=False,
        proxy_headers=True,
    )
