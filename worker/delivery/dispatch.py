"""Which sealed batches need an upload task now.

The ``sealed`` index scores each batch by when an upload task was last sent for it. Sealing sends
one at once; a batch whose task was lost (a dead worker, a purged queue) is picked up again here once
``redispatch_after`` seconds have passed, and its score is moved forward. Repeated upload messages
are harmless: the upload step checks the batch's state under the counter's lock.

Fair order (issue 22): the upload tasks of one dispatch carry a priority, 0 for the first batch of
each client (its registry account; a counter outside the registry is a client of its own) and 3 for
that client's later ones. On the Redis broker kombu keeps one list per priority step and every worker
pops priority 0 of every queue before any 3, so a client that seals many batches at once (a flood)
queues behind another client's single batch instead of in front of it; nothing is lost or dropped,
only the order changes (batches of one counter never depended on it: each upload takes the counter's
lock and checks its batch's state). RabbitMQ ignores the priority (its quorum queues have none).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from worker.delivery.uploader import clock_ms
from worker.ids import shard_of_batch
from worker.model.kinds import Bucket

if TYPE_CHECKING:
    from worker.runtime import Runtime

MAX_PER_RUN = 1_000
FIRST_PRIORITY, LATER_PRIORITY = 0, 3  # kombu's Redis priority steps are 0, 3, 6, 9; 0 is popped first


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


def fair_priorities(rt: Runtime, batch_ids: list[str]) -> list[tuple[str, int]]:
    """Each batch with its upload task's priority: the first batch of each client in ``batch_ids`` first,
    then the later ones. Two round trips: the batches' buckets, then their counters' owners from the
    registry's counter index (no account is decoded, so an unreadable key ring changes nothing here)."""
    if not batch_ids:
        return []
    pipe = rt.redis.pipeline(transaction=False)
    for batch_id in batch_ids:
        pipe.hget(rt.keys.batch(batch_id), "bucket")
    buckets = cast(list[str | None], pipe.execute())
    counters = [Bucket.decode(b).counter_id if b else None for b in buckets]
    known = sorted({c for c in counters if c is not None})
    found = cast(list[str | None], rt.redis.hmget(rt.keys.account_counters, known)) if known else []
    owners = dict(zip(known, found, strict=True))
    seen: set[str] = set()
    result: list[tuple[str, int]] = []
    for batch_id, counter in zip(batch_ids, counters, strict=True):
        # Whose batch: the account holding its counter, else the counter itself, else (gone) nobody's.
        owner = owners.get(counter) if counter is not None else None
        client = f"account:{owner}" if owner else f"counter:{counter}" if counter is not None else batch_id
        result.append((batch_id, LATER_PRIORITY if client in seen else FIRST_PRIORITY))
        seen.add(client)
    return result
