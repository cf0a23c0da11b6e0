"""Producer CPU per call (issue 26, item 1): ``.venv/bin/python scripts/bench_producer.py [CALLS]``.

Submits the benchmark's calls (``bench.load.make_call``: every call its own caller number) in chunks
of 1,000 through ``Producer.submit`` to the Redis at 127.0.0.1:6379, under a namespace of its own
that it deletes afterwards, and prints the producer process's CPU per call (validation, rows and
the Redis round trips; Redis's own CPU is not counted). Run it back to back on two checkouts.
"""

from __future__ import annotations

import os
import sys
import time

from redis import Redis

from bench.load import make_call
from config.settings import Settings
from worker.runtime import Runtime


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    namespace = f"benchp{os.getpid()}"
    settings = Settings(_env_file=None, redis_url="redis://127.0.0.1:6379/0", namespace=namespace, shards=2)
    runtime = Runtime(settings)
    now = int(time.time())
    events = [make_call(namespace, n, 10, now) for n in range(calls)]
    runtime.producer.submit(events[:1])  # connections, scripts, shard pins
    wall, cpu = time.perf_counter(), time.process_time()
    accepted = 0
    for low in range(1, calls, 1_000):
        accepted += len(runtime.producer.submit(events[low : low + 1_000]).accepted)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    redis = Redis.from_url(settings.redis_url)
    for key in redis.scan_iter(match=f"{namespace}*", count=1_000):
        redis.unlink(key)
    assert accepted == calls - 1, accepted
    print(f"{accepted} calls: producer CPU {cpu / accepted * 1e6:.1f} us per call, {accepted / wall:,.0f} calls/s")


if __name__ == "__main__":
    main()
