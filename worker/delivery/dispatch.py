"""Which sealed batches need an upload task now.

The ``sealed`` index scores each batch by when an upload task was last sent for it. Sealing sends
one at once; a batch whose task was lost (a dead worker, a purged queue) is picked up again here once
``redispatch_after`` seconds have passed, and its score is moved forward. Repeated upload messages
are harmless: the upload step checks the batch's state under the counter's lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from worker.delivery.uploader import clock_ms
from worker.ids import shard_of_batch

if TYPE_CHECKING:
    from worker.runtime import Runtime

MAX_PER_RUN = 1_000


def park(rt: Runtime, batch_id: str, seconds: float, reason: str = "deferred") -> None:
    """Send this batch's upload task again in ``seconds`` (a long wait: quota, paused token).

    Long countdowns are not left to Celery: an ETA message longer than the broker's visibility
    timeout would be delivered twice. The sweeper sends it when its time comes.
    """
    when = clock_ms(rt) + int((seconds - rt.settings.redispatch_after) * 1000)
    pipe = rt.redis.pipeline(transaction=True)
    pipe.zadd(rt.keys.sealed(shard_of_batch(batch_id)), {batch_id: when}, xx=True)
    pipe.hset(rt.keys.batch(batch_id), "parked_reason", reason[:40])  # the parked_batches gauge's label
    pipe.execute()


def overdue_batches(rt: Runtime) -> list[str]:
    """Batches awaiting upload whose last dispatch is older than ``redispatch_after``; marks them sent."""
    now = clock_ms(rt)
    cutoff = now - int(rt.settings.redispatch_after * 1000)
    overdue: list[str] = []
    for shard in range(rt.keys.shards):
        key = rt.keys.sealed(shard)
        ids = cast(list[str], rt.redis.zrangebyscore(key, "-inf", cutoff, start=0, num=MAX_PER_RUN))
        if ids:
            # XX: never re-add a batch that left the index meanwhile.
            rt.redis.zadd(key, dict.fromkeys(ids, now), xx=True)
            overdue.extend(ids)
    return overdue
