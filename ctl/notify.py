"""``ctl notify``: the webhook outbox (issue 19): waiting events, dead letters, and retrying them; each
account's circuit breaker (issue 22)."""

from __future__ import annotations

import click

from ctl.context import Context
from ctl.output import emit, json_option, local_time, say
from worker.notify import breaker, outbox


@click.group()
def notify() -> None:
    """Webhook notifications: final upload statuses and held calls, per account."""


@notify.command()
@json_option
@click.pass_obj
def dead(ctx: Context, as_json: bool) -> None:
    """Events whose deliveries failed every retry (with the last error)."""
    letters = outbox.dead_letters(ctx.runtime)
    rows = [(d["event"]["id"], d["event"]["account"], d["attempts"], d["error"]) for d in letters]
    emit({"dead": letters, "counts": outbox.counts(ctx.runtime)}, as_json=as_json,
         headers=("event", "account", "attempts", "last error"), rows=rows)  # fmt: skip
    if not as_json and not rows:
        say("no dead letters")


@notify.command()
@click.argument("event_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Retry every dead letter.")
@click.pass_obj
def retry(ctx: Context, event_ids: tuple[str, ...], every: bool) -> None:
    """Put dead letters back in the outbox; the sweep sends them again."""
    if not event_ids and not every:
        raise click.UsageError("give EVENT_IDS or --all")
    moved = outbox.retry_dead(ctx.runtime, None if every else list(event_ids))
    say(f"{moved} event(s) back in the outbox")


@notify.command()
@json_option
@click.pass_obj
def breakers(ctx: Context, as_json: bool) -> None:
    """Each account's webhook circuit breaker: consecutive failures, closed / open / half-open, until when."""
    shown = breaker.states(ctx.runtime)
    rows = [(a, s["state"], s["failures"], local_time(s["open_until_ms"])) for a, s in shown.items()]
    emit({"breakers": shown}, as_json=as_json, headers=("account", "state", "failures", "paused until"), rows=rows)
    if not as_json and not rows:
        say("every breaker is closed")


@notify.command()
@click.argument("account")
@click.pass_obj
def reset(ctx: Context, account: str) -> None:
    """Close an account's breaker now (after its receiver was fixed); its waiting events go out next sweep."""
    closed = breaker.reset(ctx.runtime, account)
    woken = outbox.wake(ctx.runtime, account)
    say(f"the breaker of {account} is closed" if closed else f"{account} had no breaker record")
    say(f"{woken} waiting event(s) of {account} are due now")
