"""``python -m ingest.pbx``: the on-premise PBX readers (Asterisk AMI client, ``Master.csv`` importer)."""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path

import click

from config.logging import configure_logging
from config.settings import load_settings
from ingest.pbx.ami import AmiClient, cdr_handler
from ingest.pbx.asterisk import AsteriskConfig
from ingest.pbx.cdr_csv import CdrCsvImporter
from worker.intake.service import build_intake
from worker.runtime import Runtime


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Read calls from an on-premise Asterisk (settings: CALLTRACK_AMI_*, CALLTRACK_ASTERISK_*)."""


@main.command()
def ami() -> None:
    """Log in to AMI and store every Cdr event; reconnects with back-off. Runs until stopped."""
    settings = load_settings()
    configure_logging(settings)
    runtime = Runtime(settings)
    if settings.ami_secret is None:
        raise click.UsageError("CALLTRACK_AMI_SECRET is not set")
    handler = cdr_handler(build_intake(runtime), AsteriskConfig.from_settings(settings))
    client = AmiClient(
        settings.ami_host,
        settings.ami_port,
        settings.ami_username,
        settings.ami_secret.get_secret_value(),
        handler,
        max_backoff=settings.ami_max_backoff,
    )

    async def run() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            if task is not None:
                loop.add_signal_handler(sig, task.cancel)
        await client.run()

    try:
        asyncio.run(run())
    except asyncio.CancelledError:
        pass
    finally:
        runtime.close()


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--follow", is_flag=True, help="Keep reading as the file grows (like tail -f) until stopped.")
@click.option("--source", help="Name of this file's position in Redis (default: its absolute path).")
@click.option("--batch-rows", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option("--poll", type=click.FloatRange(0.05, 60), default=1.0, show_default=True, help="Seconds between reads.")
def csv(path: Path, follow: bool, source: str | None, batch_rows: int, poll: float) -> None:
    """Import Asterisk Master.csv from where the last run stopped (layout: CALLTRACK_CDR_CSV_COLUMNS)."""
    settings = load_settings()
    configure_logging(settings)
    runtime = Runtime(settings)
    importer = CdrCsvImporter(
        path,
        build_intake(runtime),
        runtime.redis,
        runtime.keys,
        AsteriskConfig.from_settings(settings),
        settings.cdr_csv_columns,
        source=source,
        batch_rows=batch_rows,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stats = importer.run(follow=follow, poll_seconds=poll, stop=stop)
    finally:
        runtime.close()
    click.echo(
        f"rows {stats.rows}: accepted {stats.accepted}, held {stats.held}, "
        f"ignored {stats.ignored}, rejected {stats.rejected}"
    )


if __name__ == "__main__":
    main()
