"""``ctl counters``: the counters of the registry's accounts, with their own settings, and their setup
for attribution (offline-data options, join thresholds, conversion goals)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from ctl.accounts import registry_errors, report
from ctl.context import Context
from ctl.output import emit, json_option, local_time
from worker.accounts import edits
from worker.delivery.counter_setup import Readiness, readiness, setup_counter
from worker.delivery.quota import GROUPS, QuotaGate
from worker.errors import AccountInputError

FIELDS = ("token", "goal_name", "flush_age", "phone_region", "timezone")


def counter_options(fn: Any) -> Any:
    for option in reversed(
        [
            click.option("--token", "token", help="Name of the account's token that uploads (default: its first)."),
            click.option("--goal-name", help="Calls goal created if the counter has none."),
            click.option("--flush-age", type=float, help="Seconds a batch of this counter may wait before sealing."),
            click.option("--phone-region", help="Default region of local phone numbers (ISO 3166, as RU)."),
            click.option("--timezone", help="Time zone of the counter (IANA name)."),
        ]
    ):
        fn = option(fn)
    return fn


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in FIELDS and v is not None}


@click.group()
def counters() -> None:
    """Counters of the registry's accounts; adding one starts its uploads, removing one parks them."""


@counters.command()
@click.argument("counter_id", type=int)
@click.option("--account", "account_id", required=True, help="The account the counter belongs to.")
@counter_options
@json_option
@click.pass_obj
def add(ctx: Context, /, counter_id: int, account_id: str, as_json: bool, **values: Any) -> None:
    """Add COUNTER_ID to an account."""
    with registry_errors():
        report(edits.add_counter(ctx.runtime.accounts, account_id, {"id": counter_id, **_given(values)}), as_json)


@counters.command()
@click.argument("counter_id", type=int)
@counter_options
@json_option
@click.pass_obj
def update(ctx: Context, /, counter_id: int, as_json: bool, **values: Any) -> None:
    """Change settings of COUNTER_ID."""
    with registry_errors():
        if not _given(values):
            raise AccountInputError("options", "give at least one setting to change")
        report(edits.update_counter(ctx.runtime.accounts, counter_id, _given(values)), as_json)


@counters.command()
@click.argument("counter_id", type=int)
@json_option
@click.pass_obj
def remove(ctx: Context, counter_id: int, as_json: bool) -> None:
    """Remove COUNTER_ID: its uploads stop; its pending batches stay visible in 'ctl status'."""
    with registry_errors():
        report(edits.remove_counter(ctx.runtime.accounts, counter_id), as_json)


def _rows(ctx: Context, account_id: str | None) -> list[dict[str, Any]]:
    with registry_errors():
        found = ctx.runtime.accounts.accounts()
    return sorted(
        (
            {"account": a.id, **c.model_dump(exclude_none=True)}
            for a in found
            for c in a.counters
            if account_id in (None, a.id)
        ),
        key=lambda row: row["id"],
    )


@counters.command("list")
@click.option("--account", "account_id", help="Only this account's counters.")
@json_option
@click.pass_obj
def list_(ctx: Context, account_id: str | None, as_json: bool) -> None:
    """Every counter with its account and settings; removed counters whose batches wait are listed too."""
    rows = _rows(ctx, account_id)
    removed = ctx.runtime.accounts.removed_counters()
    if as_json:
        emit({"counters": rows, "removed": removed}, as_json=True)
        return
    headers = ("counter", "account", *FIELDS)
    emit(
        None, as_json=False, headers=headers, rows=[(r["id"], r["account"], *(r.get(f) for f in FIELDS)) for r in rows]
    )
    if removed:
        click.echo(f"removed (batches wait): {', '.join(str(c) for c in removed)}")


@counters.command()
@click.argument("counter_id", type=int)
@json_option
@click.pass_obj
def show(ctx: Context, counter_id: int, as_json: bool) -> None:
    """One counter's account and settings."""
    row = next((r for r in _rows(ctx, None) if r["id"] == counter_id), None)
    if row is None:
        raise click.ClickException(f"counter: {counter_id} is in no account")
    emit(row, as_json=True) if as_json else click.echo("\n".join(f"{k}: {v}" for k, v in row.items()))


# --- setup for attribution (offline-data options, join thresholds, goals) -------------------------
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
    """Read each counter's offline-data options and join thresholds, switch on what uploads need and
    create missing goals (unless --check). Exit 1 when a counter is not ready."""
    done = [setup_counter(ctx.runtime, counter, targets, apply=not check) for counter in counter_ids]
    _show_readiness(done, as_json)
    if not all(r.ready for r in done):
        raise SystemExit(1)


@counters.command("quota")
@json_option
@click.pass_obj
def quota_command(ctx: Context, as_json: bool) -> None:
    """Today's Metrica quota per login, per method group (client_read: polls, lists, setting reads;
    client_write: uploads, switches, goals), each its own daily budget."""
    rt, daily = ctx.runtime, ctx.runtime.settings.quota_daily_per_login
    views = QuotaGate(rt).view()
    emit(
        [{**asdict(q), "left": {g: max(daily - n, 0) for g, n in q.used.items()}} for q in views],
        as_json=as_json,
        headers=("login", "counters", "client_read used/left", "client_write used/left", "in flight", "paused"),
        rows=[
            (
                q.login,
                ", ".join(str(c) for c in q.counters) or "-",
                *(f"{q.used[g]}/{max(daily - q.used[g], 0)}" for g in GROUPS),
                q.in_flight,
                "; ".join(q.paused.values()) or "-",
            )
            for q in views
        ],
    )


@counters.command("ready")
@json_option
@click.pass_obj
def ready_command(ctx: Context, as_json: bool) -> None:
    """What each counter's last setup found: options, join thresholds, goals, problems."""
    _show_readiness([r for _, r in sorted(readiness(ctx.runtime).items())], as_json)


def _show_readiness(items: list[Readiness], as_json: bool) -> None:
    emit(
        [{**asdict(r), "ready": r.ready} for r in items],
        as_json=as_json,
        headers=("counter", "ready", "options on since", "goals created", "calls join from", "problems"),
        rows=[
            (
                r.counter_id,
                "yes" if r.ready else "no",
                ", ".join(f"{name} {local_time(at)}" for name, at in sorted(r.enabled_at.items())) or "-",
                ", ".join(r.goals_created) or "-",
                r.join_from.get("calls", "-"),
                "; ".join(r.problems()) or "-",
            )
            for r in items
        ],
    )
