"""``python -m worker.ops.exporter``: the Prometheus endpoint on its own, for deployments without the
ingestion service (which serves the same metrics at ``/metrics``). Any number may run: every
number comes from Redis (see :mod:`worker.ops.metrics`)."""

from __future__ import annotations

import signal
import threading

import click

from config.logging import configure_logging
from config.settings import load_settings
from worker.dataplane.keys import Keys
from worker.ops import scrape
from worker.store import connect_data


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", help="Address to listen on (default CALLTRACK_METRICS_ADDRESS, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default CALLTRACK_METRICS_PORT, 9108).")
def main(host: str | None, port: int | None) -> None:
    """Serve /metrics of the whole deployment, read from Redis at each scrape."""
    from prometheus_client import start_http_server  # noqa: PLC0415

    settings = load_settings()
    configure_logging(settings)
    reg = scrape.registry(connect_data(settings), Keys(settings.namespace, settings.shards), settings)
    server, thread = start_http_server(port or settings.metrics_port, host or settings.metrics_address, registry=reg)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    click.echo(f"metrics on http://{host or settings.metrics_address}:{port or settings.metrics_port}/metrics")
    stop.wait()
    server.shutdown()
    thread.join(5)


if __name__ == "__main__":
    main()
