"""``python -m ingest``: serve the ingestion service (see ``ingest/app.py`` for its routes)."""

from __future__ import annotations

import click

from ingest.server import serve


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", help="Address to listen on (default CALLTRACK_INGEST_HOST, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default CALLTRACK_INGEST_PORT, 8080).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Processes (one per core).")
def main(host: str | None, port: int | None, workers: int) -> None:
    """Serve provider webhooks and the generic JSON API; calls go to Redis."""
    serve(host, port, workers)


if __name__ == "__main__":
    main()
