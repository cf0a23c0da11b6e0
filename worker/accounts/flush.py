"""Per-counter flush ages: the registry's ``flush_age`` of each counter, published per shard for drain.lua.

drain.lua reads ``<ns>:{sN}:flushage`` (counter -> ms) when a counter's buffer opens, so a counter
with its own flush age seals by it. Each process republishes when it sees a new registry version (one
MULTI per shard: the hash is replaced whole, so removed counters and cleared ages disappear too).
"""

from __future__ import annotations

from collections import defaultdict

from worker.accounts.registry import Registry


class FlushAges:
    """Keeps the per-shard hashes in step with the registry; cheap when nothing changed."""

    def __init__(self, reg: Registry) -> None:
        self._reg = reg
        self._published: str | None = None

    def publish(self) -> bool:
        """Republish if the registry changed since this process last did; True when it wrote."""
        snap = self._reg.snapshot()
        if snap.version == self._published:
            return False
        keys = self._reg.keys
        by_shard: dict[int, dict[str, int]] = defaultdict(dict)
        for counter_id, (_, counter) in snap.by_counter.items():
            if counter.flush_age is not None:
                by_shard[keys.shard_of(counter_id)][str(counter_id)] = int(counter.flush_age * 1000)
        for shard in range(keys.shards):
            pipe = self._reg.redis.pipeline(transaction=True)
            pipe.delete(keys.flush_ages(shard))
            if by_shard.get(shard):
                pipe.hset(keys.flush_ages(shard), mapping=by_shard[shard])  # type: ignore[arg-type]
            pipe.execute()
        self._published = snap.version
        return True
