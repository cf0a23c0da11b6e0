"""Gauges of the store itself, read at scrape time: Redis memory and the batches parked for later."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import cast

from prometheus_client.core import GaugeMetricFamily, Metric
from redis import Redis

from worker.dataplane.keys import Keys
from worker.store import memory, redis_now_ms

PREFIX = "calltrack"
MAX_PARKED_SCAN = 10_000


def store_gauges(redis: Redis, keys: Keys) -> Iterator[Metric]:
    """``redis_memory_{used,max}_bytes``, ``parked_batches{reason}`` and ``restore_held_shards``."""
    reading = memory(redis)
    for name, value in (("used", reading.used), ("max", reading.limit)):
        gauge = GaugeMetricFamily(f"{PREFIX}_redis_memory_{name}_bytes", f"Redis {name} memory; max 0: no limit.")
        gauge.add_metric([], value)
        yield gauge
    parked = GaugeMetricFamily(
        f"{PREFIX}_parked_batches",
        "Sealed batches parked for a later dispatch (quota, paused token, back-off), by reason.",
        labels=["reason"],
    )
    now = redis_now_ms(redis)
    tally: Tally[str] = Tally()
    for shard in range(keys.shards):
        ids = cast(list[str], redis.zrangebyscore(keys.sealed(shard), f"({now}", "+inf", start=0, num=MAX_PARKED_SCAN))
        if ids:
            pipe = redis.pipeline(transaction=False)
            for batch_id in ids:
                pipe.hget(keys.batch(batch_id), "parked_reason")
            tally.update(str(reason or "unknown") for reason in pipe.execute())
    for reason, count in sorted(tally.items()):
        parked.add_metric([reason], count)
    yield parked
    pipe = redis.pipeline(transaction=False)
    for shard in range(keys.shards):
        pipe.hget(keys.restore_hold(shard), "state")
    restored = GaugeMetricFamily(
        f"{PREFIX}_restore_held_shards",
        "Shards held after a restore of Redis was detected: nothing drained or uploaded until `ctl restore confirm`.",
    )
    restored.add_metric([], sum(1 for state in pipe.execute() if state == "held"))
    yield restored
