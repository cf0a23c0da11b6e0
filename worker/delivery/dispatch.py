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

import time
import weakref
from typing import TYPE_CHECKING, cast

import structlog

from worker.dataplane.ids import shard_of_batch
from worker.delivery.uploader import clock_ms
from worker.errors import DeferredError, TokenUnreadableError
from worker.model.kinds import Bucket

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)
MAX_PER_RUN = 1_000
FIRST_PRIORITY, LATER_PRIORITY = 0, 3  # kombu's Redis priority steps are 0, 3, 6, 9; 0 is popped first
RESUME_EVERY = 60.0
_resumed_at: weakref.WeakKeyDictionary[Runtime, float] = weakref.WeakKeyDictionary()


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


def resume_due(rt: Runtime, now: float | None = None) -> bool:
    """True at a process's first drain and every ``RESUME_EVERY`` seconds after (see ``resume_readable``)."""
    now = time.monotonic() if now is None else now
    last = _resumed_at.get(rt)
    if last is not None and now - last < RESUME_EVERY:
        return False
    _resumed_at[rt] = now
    return True


def resume_readable(rt: Runtime) -> int:
    """Batches parked because their account's token could not be read, whose account this process reads
    now (the key ring was fixed and the process restarted), become due at once: the next sweep sends
    them. Returns how many."""
    if not rt.accounts.snapshot().accounts:
        return 0  # no account readable here: nothing of this kind can go out
    now = clock_ms(rt)
    due = now - int(rt.settings.redispatch_after * 1000) - 1
    resumed = 0
    for shard in range(rt.keys.shards):
        key = rt.keys.sealed(shard)
        ids = cast(list[str], rt.redis.zrangebyscore(key, f"({now}", "+inf", start=0, num=MAX_PER_RUN * 10))
        if not ids:
            continue
        pipe = rt.redis.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hmget(rt.keys.batch(batch_id), ["parked_reason", "bucket"])
        ready = []
        for batch_id, (reason, bucket) in zip(ids, pipe.execute(), strict=True):
            if reason == "token_unreadable" and bucket and _readable(rt, int(str(bucket).split(":", 1)[0])):
                ready.append(batch_id)
        if ready:
            rt.redis.zadd(key, dict.fromkeys(ready, due), xx=True)
            resumed += len(ready)
    if resumed:
        log.info("unreadable_batches_resumed", batches=resumed)
    return resumed


def _readable(rt: Runtime, counter_id: int) -> bool:
    try:
        rt.accounts.token_for(counter_id)
    except TokenUnreadableError:
        return False
    except DeferredError:
        return True  # another wait (removed, no token yet): its own retry applies
    return True


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
