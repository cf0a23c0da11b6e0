"""``ctl restore``: a restore of Redis from a backup, seen at Metrica (worker/delivery/restore.py), holds
the shard's draining and uploads until the operator confirms here."""

from __future__ import annotations

import click

from ctl.context import Context
from ctl.output import emit, json_option, local_time, say
from worker.delivery import restore as restores
from worker.delivery import restore_hold


@click.group()
def restore() -> None:
    """Shards held after a restore of Redis was detected; confirm to let them upload again."""


@restore.command()
@json_option
@click.pass_obj
def status(ctx: Context, as_json: bool) -> None:
    """Shards held because Metrica holds uploads their restored data forgot (with the evidence)."""
    shown = restore_hold.held_shards(ctx.runtime)
    rows = [
        (shard, local_time(r.get("detected_at")), r.get("counter"), r.get("evidence"), r.get("why"))
        for shard, r in shown.items()
    ]
    emit({"held": {str(s): r for s, r in shown.items()}}, as_json=as_json,
         headers=("shard", "detected", "counter", "evidence", "why"), rows=rows)  # fmt: skip
    if not as_json and not rows:
        say("no shard is held: no restore detected")


@restore.command()
@click.argument("shards", nargs=-1, type=int)
@click.option("--all", "every", is_flag=True, help="Confirm every held shard.")
@click.pass_obj
def confirm(ctx: Context, shards: tuple[int, ...], every: bool) -> None:
    """Release held SHARDS: their re-drained calls are posted, and may double those of the forgotten uploads."""
    rt = ctx.runtime
    if not shards and not every:
        raise click.UsageError("give SHARDS or --all")
    targets = sorted(restore_hold.held_shards(rt)) if every else list(shards)
    for shard in targets:
        if not 0 <= shard < rt.keys.shards:
            raise click.BadParameter(f"shard must be 0..{rt.keys.shards - 1}, got {shard}", param_hint="SHARDS")
        record = restores.confirm(rt, shard)
        if record is None:
            say(f"shard {shard} was not held")
            continue
        waiting = rt.redis.zcard(rt.keys.sealed(shard))
        say(f"shard {shard} released (evidence {record.get('evidence')}); {waiting} sealed batch(es) due for upload")
