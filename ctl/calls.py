"""``ctl replay-calls``: send calls from a file again (NDJSON), with a progress bar.

Each line is a call either in the producer's form (``counter_id``, ``call_id``, ``provider`` and
Metrica's columns; see README "Sending calls") or in the generic JSON form (``call_id``, ``to``,
``start``, ...; routed like the ingestion service does). Replaying a file twice is safe: repeats of
a call are dropped by drain.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click
import orjson

from ctl.context import Context
from ctl.output import emit, json_option, say
from ingest.input import InputError
from ingest.providers import generic
from worker.errors import ProducerError
from worker.intake.held import TOO_OLD
from worker.model.inbound import InboundCall


@click.command("replay-calls")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "form",
    type=click.Choice(["auto", "producer", "generic"]),
    default="auto",
    show_default=True,
    help="Form of the lines; auto: a line with counter_id is the producer's form, else generic.",
)
@click.option("--chunk", type=click.IntRange(1, 50_000), default=1_000, show_default=True, help="Calls per write.")
@json_option
@click.pass_obj
def replay_calls(ctx: Context, path: Path, form: str, chunk: int, as_json: bool) -> None:
    """Send every call of PATH (NDJSON, one call per line) into the pipeline; bad lines are named, and so
    are the calls outside the join window (a backfill's old rows: held, uploaded static or dropped per
    CALLTRACK_LATE_CALLS for generic lines, refused for producer-form lines)."""
    lines = [(n, line) for n, line in enumerate(path.read_bytes().split(b"\n"), start=1) if line.strip()]
    totals: Counter[str] = Counter()
    problems: list[dict[str, Any]] = []
    stderr = sys.stderr
    with click.progressbar(length=len(lines), label="calls", file=stderr) as bar:
        for start in range(0, len(lines), chunk):
            part = lines[start : start + chunk]
            try:
                _send(ctx, part, form, totals, problems)
            except ProducerError as error:
                raise click.ClickException(
                    f"Redis refused a write after {totals.total()} calls: {error}; replaying the file again is safe"
                ) from None
            bar.update(len(part))
    counted = ("accepted", "held", "ignored", "rejected", "outside_join_window")
    summary = {"lines": len(lines), **{k: totals[k] for k in counted}}
    emit({**summary, "problems": problems[:1000]}, as_json=as_json) if as_json else _report(summary, problems)
    if totals["rejected"]:
        raise SystemExit(1)


def _send(
    ctx: Context, part: list[tuple[int, bytes]], form: str, totals: Counter[str], problems: list[dict[str, Any]]
) -> None:
    producer_lines: list[tuple[int, dict[str, Any]]] = []
    generic_lines: list[tuple[int, InboundCall]] = []
    for number, line in part:
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError:
            totals["rejected"] += 1
            problems.append({"line": number, "error": "not a JSON object"})
            continue
        is_producer = form == "producer" or (form == "auto" and isinstance(data, dict) and "counter_id" in data)
        if is_producer:
            producer_lines.append((number, data))
            continue
        try:
            generic_lines.append((number, generic.to_call(data, ctx.settings.phone_region)))
        except InputError as error:
            totals["rejected"] += 1
            problems.append({"line": number, "error": str(error)})
    if producer_lines:
        result = ctx.runtime.producer.submit([data for _, data in producer_lines])
        totals["accepted"] += len(result.accepted)
        for rejection in result.rejected:
            totals["rejected"] += 1
            totals["outside_join_window"] += any(e.rule == "join_window" for e in rejection.errors)
            problems.append({"line": producer_lines[rejection.index][0], "error": rejection.reason})
    if generic_lines:
        outcomes = ctx.intake.accept([call for _, call in generic_lines])
        for (number, _), outcome in zip(generic_lines, outcomes, strict=True):
            totals[outcome.status] += 1
            totals["outside_join_window"] += outcome.reason.startswith(TOO_OLD)
            if outcome.status in ("rejected", "held") or outcome.reason.startswith(TOO_OLD):
                problems.append({"line": number, "status": outcome.status, "error": outcome.reason})


def _report(summary: dict[str, int], problems: list[dict[str, Any]]) -> None:
    for problem in problems[:20]:
        say(f"line {problem['line']}: {problem.get('status', 'rejected')}: {problem['error']}")
    if len(problems) > 20:
        say(f"... and {len(problems) - 20} more (--json lists them)")
    say(
        f"{summary['lines']} lines: {summary['accepted']} stored, {summary['held']} held, "
        f"{summary['ignored']} ignored, {summary['rejected']} rejected; "
        f"{summary['outside_join_window']} outside the join window"
    )
