"""Whether a shard waits for the operator after a restore (``<ns>:{sN}:restored``), read without
the detection's own dependencies (the Metrica client, the quota gate): ``ctl status``, the console and
the fleet view only read the hold (:mod:`worker.delivery.restore` detects, holds and confirms)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from worker.errors import RestoreHeldError

if TYPE_CHECKING:
    from worker.runtime import Runtime

HELD, CONFIRMED = "held", "confirmed"


def held(rt: Runtime, shard: int) -> dict[str, str]:
    """The shard's restore record (empty when none); ``state`` is ``held`` while it waits."""
    return cast(dict[str, str], rt.redis.hgetall(rt.keys.restore_hold(shard)))


def held_shards(rt: Runtime) -> dict[int, dict[str, str]]:
    """Every shard on hold, with its record."""
    pipe = rt.redis.pipeline(transaction=False)
    for shard in range(rt.keys.shards):
        pipe.hgetall(rt.keys.restore_hold(shard))
    return {shard: rec for shard, rec in enumerate(pipe.execute()) if rec.get("state") == HELD}


def ensure_not_held(rt: Runtime, shard: int) -> None:
    """Raise ``RestoreHeldError`` while the shard waits for the operator."""
    if rt.redis.hget(rt.keys.restore_hold(shard), "state") == HELD:
        raise RestoreHeldError(
            f"a restore of Redis was detected on shard {shard}; its uploads wait for `ctl restore confirm`",
            retry_after=60.0,
        )
