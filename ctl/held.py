"""``ctl held``: calls kept because they cannot be uploaded yet (unknown number, no identifier)."""

from __future__ import annotations

from dataclasses import asdict

import click

from ctl.context import Context
from ctl.output import emit, json_option, local_time, say
from worker.errors import ProducerError
from worker.intake.held import HeldCall
from worker.model.inbound import check_identifier


def _select(ctx: Context, ids: tuple[str, ...], reason: str | None, limit: int) -> list[HeldCall]:
    held = ctx.intake.held
    entries = held.get(ids) if ids else held.entries(count=limit)
    if ids and len(entries) != len(set(ids)):
        found = {e.entry_id for e in entries}
        missing = [i for i in ids if i not in found]
        raise click.ClickException(f"no held call with id {', '.join(missing[:5])}")
    return [e for e in entries if reason is None or e.reason.startswith(reason)]


@click.group()
def held() -> None:
    """Calls kept with the reason they could not be uploaded; replay them once that is fixed."""


@held.command("list")
@click.option("--reason", help="Only this reason (unknown_number, no_identifier).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@json_option
@click.pass_obj
def list_(ctx: Context, reason: str | None, limit: int, as_json: bool) -> None:
    """The oldest held calls first."""
    entries = _select(ctx, (), reason, limit)
    emit(
        [{"id": e.entry_id, "reason": e.reason, "held_at_ms": e.held_at_ms, "call": asdict(e.call)} for e in entries],
        as_json=as_json,
        headers=("id", "reason", "provider", "call id", "tracking number", "caller", "started", "account"),
        rows=[
            (
                e.entry_id,
                e.reason,
                e.call.provider,
                e.call.call_id,
                e.call.tracking_number or "-",
                e.call.caller or "-",
                local_time(e.call.started_at, unit=1),
                e.call.owner or "-",  # the client account whose credential brought it (-: an operator's)
            )
            for e in entries
        ],
    )
    if not as_json:
        per_account = ", ".join(f"{a} {n}" for a, n in ctx.intake.held.per_account().items())
        in_all = f"{ctx.intake.held.count()} held in all" + (f" ({per_account})" if per_account else "")
        say(f"{len(entries)} shown, {in_all}")


@held.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every held call (up to --limit).")
@click.option("--reason", help="Only calls held for this reason.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=10_000, show_default=True)
@click.option("--client-id", help="The visitor's ClientId, for the calls named by IDS.")
@click.option("--user-id", help="The visitor's UserId, for the calls named by IDS.")
@click.option("--yclid", help="The click's Yclid, for the calls named by IDS.")
@json_option
@click.pass_obj
def replay(
    ctx: Context,
    ids: tuple[str, ...],
    everything: bool,
    reason: str | None,
    limit: int,
    client_id: str | None,
    user_id: str | None,
    yclid: str | None,
    as_json: bool,
) -> None:
    """Send held calls (IDS, or --all) through routing again; each leaves the stream once stored.

    A call still not uploadable stays, with its reason brought up to date. Replaying twice is safe:
    a call already stored is dropped as a repeat.
    """
    if not ids and not everything:
        raise click.UsageError("name held call ids, or give --all")
    identifiers = {k: v for k, v in (("ClientId", client_id), ("UserId", user_id), ("Yclid", yclid)) if v}
    if identifiers and not ids:
        raise click.UsageError("--client-id, --user-id and --yclid apply to calls named by id, not to --all")
    for column, value in identifiers.items():
        problem = check_identifier(column, value)
        if problem is not None:
            raise click.BadParameter(problem.message, param_hint=f"--{column.lower().replace('id', '-id')}")
    entries = _select(ctx, ids, reason, limit)
    try:
        report = ctx.intake.replay(entries, ids=identifiers or None)
    except ProducerError as error:
        raise click.ClickException(f"nothing was released: {error}") from None
    results = [{"id": entry_id, **outcome.to_dict()} for entry_id, outcome in report.outcomes.items()]
    emit(
        {"replayed": len(results), "results": results},
        as_json=as_json,
        headers=("id", "status", "reason"),
        rows=[(r["id"], r["status"], r.get("reason", "")) for r in results],
    )
    if not as_json:
        say(
            f"{report.count('accepted')} stored, {report.count('held')} still held, "
            f"{report.count('rejected')} rejected, {report.count('ignored')} ignored"
        )
