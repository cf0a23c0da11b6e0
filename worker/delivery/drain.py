"""Drain: move accepted events from the ingest streams into buffers and seal full or due buffers.

All the moving happens inside ``lua/drain.lua``, one atomic step per chunk: an event is either still
in its stream or already in a buffer (or dropped as a repeat), never both and never neither. This
module loops the script over the shards and reports the batches it sealed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import structlog
from redis.exceptions import ResponseError

from worker.dataplane.ids import batch_nonce
from worker.delivery import restore_hold
from worker.delivery.quota import QuotaGate
from worker.failpoints import failpoint
from worker.store import ensure_shard

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class DrainResult:
    """Totals of one drain run."""

    read: int = 0
    repeats: int = 0
    sealed: list[str] = field(default_factory=list)

    def add(self, other: DrainResult) -> None:
        self.read += other.read
        self.repeats += other.repeats
        self.sealed.extend(other.sealed)


def drain_shard(rt: Runtime, shard: int, *, seal_all: bool = False) -> DrainResult:
    """Run the drain script once on ``shard``: whole stream entries until about ``drain_chunk`` events."""
    s = rt.settings
    args: list[str | int] = [
        rt.keys.prefix(shard),
        s.drain_chunk,
        s.dedup_window_days * 86_400,
        s.flush_max_rows,
        s.flush_max_bytes,
        int(s.flush_max_age * 1000),
        shard,
        "1" if seal_all else "0",
        batch_nonce(),
        s.dedup_period_days,
        s.dedup_buckets,
    ]
    try:
        reply = rt.scripts.drain(keys=[rt.keys.stream(shard)], args=args)
    except ResponseError as error:
        if "NOEPOCH" not in str(error):
            raise
        # Redis lost the shard's epoch (a restart without persistence, or a fresh server).
        ensure_shard(rt.redis, rt.keys, shard)
        reply = rt.scripts.drain(keys=[rt.keys.stream(shard)], args=args)
    failpoint("after_drain")  # entries are buffered and acknowledged, batches sealed, no task sent
    result = DrainResult(read=int(reply[0]), repeats=int(reply[1]), sealed=[str(x) for x in reply[2:]])
    if result.sealed:
        log.info("batches_sealed", shard=shard, batches=result.sealed, read=result.read)
    return result


def update_holds(rt: Runtime, gate: QuotaGate) -> int:
    """Mark counters whose login is short of upload quota, so their buffers seal by size only."""
    # The budget is the login's (every token of a login spends it): one look per login.
    by_login = {rt.accounts.login_of(token): token for token in rt.accounts.tokens()}
    short = {login for login, token in by_login.items() if gate.upload_budget_short(token)}
    held = 0
    for shard in range(rt.keys.shards):
        key = rt.keys.hold(shard)
        counters: set[str] = set()
        if short:
            for bucket in cast(list[str], rt.redis.zrange(rt.keys.due(shard), 0, -1)):
                counter = int(bucket.split(":", 1)[0])
                token = rt.accounts.token_for(counter, removed_ok=True)
                if token is not None and rt.accounts.login_of(token) in short:
                    counters.add(str(counter))
        pipe = rt.redis.pipeline(transaction=True)
        pipe.delete(key)
        if counters:
            pipe.sadd(key, *counters)
        pipe.execute()
        held += len(counters)
    if held:
        log.warning("batches_growing_quota_short", counters=held)
    return held


def drain(rt: Runtime, *, time_budget: float | None = None, seal_all: bool = False) -> DrainResult:
    """Drain every shard until the streams are empty or ``time_budget`` seconds have passed."""
    rt.flush_ages.publish()  # counters' own flush ages, when the account registry changed
    budget = rt.settings.drain_time_budget if time_budget is None else time_budget
    deadline = time.monotonic() + budget
    total = DrainResult()
    busy = set(range(rt.keys.shards)) - set(restore_hold.held_shards(rt))  # a restored shard waits
    while busy:
        for shard in sorted(busy):
            result = drain_shard(rt, shard, seal_all=seal_all)
            total.add(result)
            if result.read < rt.settings.drain_chunk:
                busy.discard(shard)
        if time.monotonic() >= deadline:
            break
    return total
