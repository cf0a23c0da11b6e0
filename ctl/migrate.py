"""``ctl migrate``: bring the namespace's data format to this release's (worker/format.py)."""

from __future__ import annotations

import click

from ctl.context import Context
from ctl.output import emit, json_option
from worker.errors import StoreConfigError
from worker.format import CURRENT, ensure_format, refuse_unknown


@click.command()
@click.option("--check", is_flag=True, help="Only say which format Redis holds; migrate nothing (exit 1: not current).")
@json_option
@click.pass_obj
def migrate(ctx: Context, check: bool, as_json: bool) -> None:
    """Migrate the data in Redis to this release's format (also done by the first worker that starts).

    Stop every worker, beat and notify worker of the older release first (README, "Upgrading"): old
    and new code never run on one format. Safe to run twice and to interrupt: each step is recorded and
    a second run resumes after the last one done. A format a newer release wrote is refused (exit 1)."""
    rt = ctx.runtime
    steps: list[str] = []
    try:
        alive_ms = int(3000 * ctx.settings.heartbeat_interval)
        found = (
            refuse_unknown(rt.redis, rt.keys)
            if check
            else ensure_format(rt.redis, rt.keys, steps.append, alive_ms=alive_ms)
        )
    except StoreConfigError as error:
        raise click.ClickException(str(error)) from None
    now = found if check else CURRENT
    data = {"namespace": rt.keys.namespace, "found": found, "format": now, "current": CURRENT, "steps": steps}
    rows = [
        ("namespace", rt.keys.namespace),
        ("found", "none (fresh)" if found is None else str(found)),
        ("format", "none" if now is None else str(now)),
        ("steps", ", ".join(steps) or "-"),
    ]
    emit(data, as_json=as_json, headers=("", ""), rows=rows)
    if check and found not in (None, CURRENT):
        raise SystemExit(1)
