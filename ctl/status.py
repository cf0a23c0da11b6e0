"""``ctl status`` and ``ctl uploads``: how each counter is doing, and a counter's upload history."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from ctl.context import Context
from ctl.output import emit, json_option, local_time
from worker.errors import UnknownCounterError
from worker.ops import overview


@contextmanager
def known_counters() -> Iterator[None]:
    """An unknown counter is one line (``counter: ... unknown``) and exit status 1."""
    try:
        yield
    except UnknownCounterError as error:
        raise click.ClickException(str(error)) from None


STATUS_HEADERS = (
    "counter", "pending", "open", "quarantined", "last upload", "status", "uploaded", "quota left", "waits for",
)  # fmt: skip


@click.command()
@click.argument("counters", nargs=-1, type=int)
@json_option
@click.pass_obj
def status(ctx: Context, counters: tuple[int, ...], as_json: bool) -> None:
    """Per counter: pending calls, open batches, last upload and its status, quarantined batches, quota left.

    COUNTERS limits the table to those counters (default: every counter with a token, a routing
    entry, a batch or pending calls); an unknown one is an error (exit status 1).
    """
    with known_counters():
        items = overview.status(ctx.runtime, set(counters) or None, known_only=True)
    emit(
        [item.to_dict() for item in items],
        as_json=as_json,
        headers=STATUS_HEADERS,
        rows=[
            (
                i.counter_id,
                f"{i.pending_calls}{'' if i.pending_exact else '+'}",
                i.open_batches,
                i.quarantined,
                i.last_batch or "-",
                i.last_status or "-",
                overview.age_text(i.last_upload_at_ms),
                ("paused " if i.paused else "")
                + ("-" if i.quota_left is None else f"{i.quota_left} ({i.quota_left_for_uploads} for uploads)"),
                ", ".join(i.waiting) or "-",
            )
            for i in items
        ],
    )


@click.command()
@click.argument("counter", type=int)
@click.option("--limit", type=click.IntRange(1, 100_000), default=30, show_default=True)
@json_option
@click.pass_obj
def uploads(ctx: Context, counter: int, limit: int, as_json: bool) -> None:
    """COUNTER's batches, newest first: state, rows, upload id, Metrica status, quantities.

    An unknown COUNTER is an error (exit status 1)."""
    with known_counters():
        items = overview.history(ctx.runtime, counter, limit=limit, known_only=True)
    emit(
        [b.to_dict() for b in items],
        as_json=as_json,
        headers=(
            "batch",
            "kind",
            "state",
            "rows",
            "upload id",
            "status",
            "lines kept",
            "refused",
            "sealed",
            "note",
        ),
        rows=[
            (
                b.batch_id,
                b.kind,
                b.state,
                b.record.get("rows", ""),
                b.record.get("upload_id", "-"),
                b.record.get("status", "-"),
                b.record.get("line_quantity", "-"),
                b.record.get("rejected_lines", "0" if b.record.get("line_quantity") else "-"),
                local_time(b.record.get("sealed_at")),
                _note(b),
            )
            for b in items
        ],
    )


def _note(b: overview.BatchInfo) -> str:
    r = b.record
    if r.get("replayed_as"):
        return f"replayed as {r['replayed_as']}"
    if r.get("replay_of"):
        return f"replay of {r['replay_of']}"
    if r.get("state") == "QUARANTINED":
        return r.get("reason", "")[:60]
    if r.get("state") == "DISCARDED":
        return f"discarded by {r.get('discarded_by', '?')}: {r.get('discard_reason', '')[:40]}"
    if r.get("overdue"):
        return "not final in time"
    return ""
