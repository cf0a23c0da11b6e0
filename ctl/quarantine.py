"""``ctl quarantine``: batches Metrica refused for good (or whose retries ran out): list, show, replay, discard."""

from __future__ import annotations

import getpass
from typing import cast

import click

from ctl.context import Context
from ctl.output import emit, json_option, local_time, say
from worker.delivery.csvfile import row_cells
from worker.delivery.replay import QuarantineError, ReplayResult, discard, replay
from worker.model.kinds import Bucket
from worker.ops import overview


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@click.group()
def quarantine() -> None:
    """Quarantined batches keep their rows: replay them once the cause is fixed, or discard them."""


@quarantine.command("list")
@json_option
@click.pass_obj
def list_(ctx: Context, as_json: bool) -> None:
    """Every quarantined batch, oldest first, with the reason."""
    items = overview.quarantined(ctx.runtime)
    emit(
        [b.to_dict() for b in items],
        as_json=as_json,
        headers=("batch", "counter", "kind", "rows", "quarantined (UTC)", "reason"),
        rows=[
            (
                b.batch_id,
                b.counter_id,
                b.kind,
                b.record.get("rows", ""),
                local_time(b.record.get("quarantined_at")),
                b.record.get("reason", "")[:100],
            )
            for b in items
        ],
    )


@quarantine.command()
@click.argument("batch_id")
@click.option("--rows", "show_rows", type=click.IntRange(0, 100_000), default=5, show_default=True,
              help="How many of its rows to print.")  # fmt: skip
@json_option
@click.pass_obj
def show(ctx: Context, batch_id: str, show_rows: int, as_json: bool) -> None:
    """BATCH_ID's record and its first rows."""
    info = overview.batch(ctx.runtime, batch_id) if _valid(batch_id) else None
    if info is None:
        raise click.ClickException(f"no batch {batch_id[:64]}")
    rt = ctx.runtime
    raw = cast(list[str], rt.redis.lrange(rt.keys.rows(batch_id), 0, show_rows - 1)) if show_rows else []
    bucket = Bucket.decode(str(rt.redis.hget(rt.keys.batch(batch_id), "bucket")))
    rows = [row_cells(bucket.spec, bucket.id_type, r) for r in raw]
    if as_json:
        emit({**info.to_dict(), "rows_shown": rows}, as_json=True)
        return
    for name, value in info.to_dict().items():
        say(f"{name:16} {value}")
    if rows:
        columns = sorted({k for r in rows for k in r})
        say("")
        emit(None, as_json=False, headers=columns, rows=[[r.get(c, "") for c in columns] for r in rows])


@quarantine.command("replay")
@click.argument("batch_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every quarantined batch.")
@click.option("--by", "who", default=_operator, show_default="your user name", help="Who replays (recorded).")
@json_option
@click.pass_obj
def replay_(ctx: Context, batch_ids: tuple[str, ...], everything: bool, who: str, as_json: bool) -> None:
    """Send quarantined batches again, never doubling a call.

    Each batch is first looked up at Metrica by its comment (the batch id): if Metrica holds it, it
    is adopted and its status followed; otherwise its rows move to a new batch (fresh id) and its
    upload task is sent. The original is marked REPLAYED, pointing at the new batch.
    """
    if not batch_ids and not everything:
        raise click.UsageError("name batch ids, or give --all")
    ids = list(batch_ids) or [b.batch_id for b in overview.quarantined(ctx.runtime)]
    results: list[ReplayResult] = []
    failures: list[tuple[str, str]] = []
    for batch_id in ids:
        try:
            result = replay(ctx.runtime, batch_id, who=who)
        except QuarantineError as error:
            failures.append((batch_id, str(error)))
            continue
        results.append(result)
        if result.new_batch_id:
            ctx.send_upload(result.new_batch_id)
    data = {
        "results": [
            {"batch_id": r.batch_id, "action": r.action, "new_batch_id": r.new_batch_id or None,
             "upload_id": r.upload_id}
            for r in results
        ],
        "failed": [{"batch_id": b, "error": e} for b, e in failures],
    }  # fmt: skip
    emit(
        data,
        as_json=as_json,
        headers=("batch", "action", "new batch / upload id"),
        rows=[(r.batch_id, r.action, r.new_batch_id or r.upload_id) for r in results]
        + [(b, "failed", e) for b, e in failures],
    )
    if failures:
        raise SystemExit(1)


@quarantine.command("discard")
@click.argument("batch_ids", nargs=-1, required=True)
@click.option("--reason", required=True, help="Why the calls are given up (recorded).")
@click.option("--by", "who", default=_operator, show_default="your user name", help="Who discards (recorded).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--keep-marks", is_flag=True, help="Keep the calls' dedup marks (the same calls stay dropped as repeats)."
)
@json_option
@click.pass_obj
def discard_(
    ctx: Context, batch_ids: tuple[str, ...], reason: str, who: str, yes: bool, keep_marks: bool, as_json: bool
) -> None:
    """Give quarantined batches up for good: their rows are deleted; who, when and why are kept.

    Their calls' dedup marks are removed too, so the same calls submitted again are accepted
    (``--keep-marks`` keeps them); the result says which."""
    if not yes:
        click.confirm(f"Delete the rows of {len(batch_ids)} batch(es) for good?", abort=True, err=True)
    done, failures = [], []
    for batch_id in batch_ids:
        try:
            done.append(discard(ctx.runtime, batch_id, who=who, why=reason, keep_marks=keep_marks))
        except QuarantineError as error:
            failures.append((batch_id, str(error)))
    emit(
        {
            "discarded": [d.batch_id for d in done],
            "marks": {d.batch_id: {"marks": d.marks, "removed": d.marks_removed} for d in done},
            "failed": [{"batch_id": b, "error": e} for b, e in failures],
        },
        as_json=as_json,
        headers=("batch", "result"),
        rows=[(d.batch_id, d.describe()) for d in done] + [(b, e) for b, e in failures],
    )
    if failures:
        raise SystemExit(1)


def _valid(batch_id: str) -> bool:
    from worker.dataplane.ids import is_batch_id  # noqa: PLC0415

    return is_batch_id(batch_id)
