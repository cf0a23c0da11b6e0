"""``ctl counters``: what each counter needs before its uploads can join visits (options, goals)."""

from __future__ import annotations

from dataclasses import asdict

import click

from ctl.context import Context
from ctl.output import emit, json_option
from worker.delivery.counter_setup import Readiness, readiness, setup_counter


@click.group()
def counters() -> None:
    """Metrica counters: their offline-data options, join thresholds and conversion goals."""


@counters.command("setup")
@click.argument("counter_ids", nargs=-1, type=click.IntRange(1), required=True, metavar="COUNTER...")
@click.option(
    "--target", "targets", multiple=True, metavar="TARGET",
    help="A conversion Target whose JavaScript-event goal must exist (again for more).",
)  # fmt: skip
@click.option("--check", is_flag=True, help="Only read and report; change nothing at Metrica.")
@json_option
@click.pass_obj
def setup(ctx: Context, counter_ids: tuple[int, ...], targets: tuple[str, ...], check: bool, as_json: bool) -> None:
    """Read each counter's options and thresholds, switch on what uploads need and create missing goals
    (unless --check). Exit 1 when a counter is not ready."""
    done = [setup_counter(ctx.runtime, counter, targets, apply=not check) for counter in counter_ids]
    _show(done, as_json)
    if not all(r.ready for r in done):
        raise SystemExit(1)


@counters.command("list")
@json_option
@click.pass_obj
def list_command(ctx: Context, as_json: bool) -> None:
    """The counters set up so far, with what their last setup found."""
    _show([r for _, r in sorted(readiness(ctx.runtime).items())], as_json)


def _show(items: list[Readiness], as_json: bool) -> None:
    emit(
        [{**asdict(r), "ready": r.ready} for r in items],
        as_json=as_json,
        headers=("counter", "ready", "switched on", "goals created", "calls join from", "problems"),
        rows=[
            (
                r.counter_id,
                "yes" if r.ready else "no",
                ", ".join(r.switched_on) or "-",
                ", ".join(r.goals_created) or "-",
                r.join_from.get("calls", "-"),
                "; ".join(r.problems()) or "-",
            )
            for r in items
        ],
    )
