"""Retention for what an earlier release left without one (issue 23, item 6).

Before the record retention (``record_retention_seconds``), a batch's record stayed forever once
final, and so did its entry in the shard's ``done`` index; the rows and marks of a batch discarded or
replayed by hand could too. The reconcile run walks each shard's ``done`` index a slice at a time (a
position per process, from the oldest entry; a walk ends at the newest and starts again after
``SWEEP_PAUSE`` seconds): a record, rows list or mark list of a final batch without a TTL gets the
retention it would have had, counted from when it became final (at least a second), and entries past
the record retention leave the index, as ``record_status.lua`` drops them when a batch closes.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, cast

import structlog

from worker.store import redis_now_ms

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)
SLICE = 500
SWEEP_PAUSE = 3600.0
# Per process and runtime: shard -> the score after which the walk goes on; the monotonic time a walk ended.
_positions: weakref.WeakKeyDictionary[Runtime, dict[int, float]] = weakref.WeakKeyDictionary()
_ended: weakref.WeakKeyDictionary[Runtime, float] = weakref.WeakKeyDictionary()


def sweep_step(rt: Runtime) -> int:
    """One slice of every shard's ``done`` index; how many keys got a TTL."""
    if time.monotonic() - _ended.get(rt, -SWEEP_PAUSE) < SWEEP_PAUSE:
        return 0
    positions = _positions.setdefault(rt, {})
    s = rt.settings
    now = redis_now_ms(rt.redis)
    given = 0
    for shard in range(rt.keys.shards):
        done = rt.keys.done(shard)
        start = positions.get(shard, float("-inf"))
        entries = cast(
            list[tuple[str, float]],
            rt.redis.zrangebyscore(done, f"({start}" if start != float("-inf") else "-inf", "+inf",
                                   start=0, num=SLICE, withscores=True),
        )  # fmt: skip
        positions[shard] = entries[-1][1] if len(entries) == SLICE else float("inf")
        given += _expire(rt, shard, entries, now)
        if entries:  # walked entries past the retention leave the index (their records expire now)
            rt.redis.zremrangebyscore(done, "-inf", min(entries[-1][1], now - s.record_retention_seconds * 1000))
    if all(p == float("inf") for p in positions.values()):
        positions.clear()
        _ended[rt] = time.monotonic()
    if given:
        log.info("retention_given", keys=given)
    return given


def _expire(rt: Runtime, shard: int, entries: list[tuple[str, float]], now: int) -> int:
    if not entries:
        return 0
    s = rt.settings
    names = [
        (name, retention, score)
        for batch_id, score in entries
        for name, retention in (
            (rt.keys.batch(batch_id), s.record_retention_seconds),
            (rt.keys.rows(batch_id), s.rows_retention_seconds),
            (rt.keys.marks(batch_id), s.rows_retention_seconds),
        )
    ]
    pipe = rt.redis.pipeline(transaction=False)
    for name, _, _ in names:
        pipe.ttl(name)
    forever = [(n, r, sc) for (n, r, sc), ttl in zip(names, pipe.execute(), strict=True) if ttl == -1]
    for name, retention, score in forever:
        pipe.expire(name, max(1, retention - int((now - score) // 1000)))
    pipe.execute()
    return len(forever)


def forget(rt: Runtime) -> None:
    """Start the walk again at the next run (tests; a new process starts anew anyway)."""
    _positions.pop(rt, None)
    _ended.pop(rt, None)
