"""``ctl held``: calls kept because they cannot be uploaded yet (unknown number, no identifier)."""

from __future__ import annotations

from dataclasses import asdict

import click

from ctl.context import Context
from ctl.output import emit, json_option, local_time, say
from worker.errors import ProducerError
from worker.intake.held import ENTRY_ID, REASONS, TOO_OLD, HeldCall
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
@click.option("--reason", help="Only this reason (unknown_number, no_identifier, no_lease, too_old).")
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
        in_all += "; by reason: " + (", ".join(f"{r} {n}" for r, n in ctx.intake.held.per_reason().items()) or "-")
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

    A call still not uploadable stays, with its reason brought up to date. A call now older than the
    join window (too_old) is dropped and counted, never held again. Replaying twice is safe: a call
    already stored is dropped as a repeat.
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
    ctx.runtime.metrics.held_dropped([TOO_OLD] * report.dropped_late)
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
            f"{report.count('rejected')} rejected, {report.count('ignored')} ignored "
            f"({report.dropped_late} dropped as too_old: older than the join window, never held again)"
        )


@held.command()
@click.argument("ids", nargs=-1)
@click.option("--reason", type=click.Choice(REASONS), help="Every call held for this reason.")
@click.option("--counter", type=click.IntRange(1), help="Every held call whose number routes to this counter.")
@click.option("--older-than", "older_than", type=click.FloatRange(0), help="Every call held more than DAYS ago.")
@json_option
@click.pass_obj
def drop(
    ctx: Context, ids: tuple[str, ...], reason: str | None, counter: int | None, older_than: float | None, as_json: bool
) -> None:
    """Delete held calls for good: IDS, or every one matching all of --reason, --counter, --older-than.

    Prints what it removed. Exits 1 when an id named matches no held call (the others are removed).
    """
    if ids and (reason or counter or older_than is not None):
        raise click.UsageError("name held call ids, or give filters, not both")
    if not ids and not (reason or counter or older_than is not None):
        raise click.UsageError("name held call ids, or give --reason, --counter or --older-than")
    bad = [i for i in ids if not ENTRY_ID.fullmatch(i)]
    if bad:
        raise click.BadParameter(f"{bad[0]} is not a held entry id like 1718000000000-0", param_hint="IDS")
    held = ctx.intake.held
    try:
        if ids:
            entries = held.drop_ids(ids)
        else:
            entries = ctx.intake.drop_held(reason=reason, counter=counter, older_than_days=older_than)
    except ProducerError as error:
        raise click.ClickException(f"nothing was removed: {error}") from None
    ctx.runtime.metrics.held_dropped(e.reason for e in entries)
    emit(
        [
            {"id": e.entry_id, "reason": e.reason, "provider": e.call.provider, "call_id": e.call.call_id}
            for e in entries
        ],
        as_json=as_json,
        headers=("id", "reason", "provider", "call id", "tracking number"),
        rows=[(e.entry_id, e.reason, e.call.provider, e.call.call_id, e.call.tracking_number or "-") for e in entries],
    )
    missing = sorted(set(ids) - {e.entry_id for e in entries})
    if not as_json:
        say(f"{len(entries)} removed, {held.count()} still held")
    if missing:
        raise click.ClickException(f"no held call with id {', '.join(missing[:5])}")


@held.command()
@json_option
@click.pass_obj
def stats(ctx: Context, as_json: bool) -> None:
    """Held calls per reason and per client account, against the caps."""
    held = ctx.intake.held
    s = ctx.settings
    per_reason, count = held.per_reason(), held.count()
    emit(
        {
            "held": count,
            "max_calls": s.held_max_calls,
            "retention_days": s.held_retention_days,
            "per_reason": per_reason,
            "per_account": held.per_account(),
        },
        as_json=as_json,
        headers=("reason", "held"),
        rows=list(per_reason.items()),
    )
    if not as_json:
        say(f"{count} held of {s.held_max_calls} (CALLTRACK_HELD_MAX_CALLS), kept {s.held_retention_days} days")
