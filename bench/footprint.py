"""Issue 18: Redis bytes of what is retained per call, measured per structure on the harness's Redis.

Calls go through the real producer (with caller marks, as the ingestion service sends them) and
drain; conversions through the producer. Then every key of each structure is sized with
``MEMORY USAGE`` (``SAMPLES 0``: exact): the dedup/ref hashes (``dd``) per call and per conversion,
and the caller history (``ch``) per (counter, caller). Bucket counts are set so each hash holds about
100 fields, as a deployment's periods size themselves (worker/dataplane/keys.py).
"""

from __future__ import annotations

import time
from typing import Any

from redis import Redis

from bench.load import make_call
from config.settings import Settings
from worker.delivery.drain import drain
from worker.intake.callers import CallerCall, CallerHistory
from worker.model.kinds import UploadKind
from worker.runtime import Runtime

SHARDS = 4


def _bytes(redis: Redis, pattern: str) -> tuple[int, int, set[str]]:
    """(keys, bytes, encodings) of every key matching ``pattern``."""
    keys = list(redis.scan_iter(pattern, count=10_000))
    total = 0
    encodings: set[str] = set()
    for low in range(0, len(keys), 1_000):
        pipe = redis.pipeline(transaction=False)
        for key in keys[low : low + 1_000]:
            pipe.memory_usage(key, samples=0)
            pipe.object("encoding", key)
        replies = pipe.execute()
        total += sum(int(r or 0) for r in replies[0::2])
        encodings.update(str(r) for r in replies[1::2])
    return len(keys), total, encodings


def footprint(redis_url: str, *, calls: int) -> dict[str, Any]:
    buckets = max(1, calls // SHARDS // 100)
    ns = f"foot{time.time_ns()}"
    settings = Settings(
        _env_file=None, redis_url=redis_url, namespace=ns, shards=SHARDS, dedup_buckets=buckets, caller_buckets=buckets
    )
    rt = Runtime(settings)
    history = CallerHistory(rt.redis, rt.keys, days=365, secret=b"bench")
    now = int(time.time())
    for low in range(0, calls, 1_000):
        chunk = [make_call(ns, n, 10, now) for n in range(low, min(low + 1_000, calls))]
        marks = [
            history.mark(CallerCall(c["counter_id"], f"+7916{n:07d}", c["call_id"])) for n, c in enumerate(chunk, low)
        ]
        rt.producer.submit(chunk, callers=[(m.key, m.mark) for m in marks])
    drain(rt, seal_all=True, time_budget=600)
    redis = Redis.from_url(redis_url, decode_responses=True)
    call_keys, call_bytes, call_enc = _bytes(redis, f"{ns}:*:dd:*")
    caller_keys, caller_bytes, caller_enc = _bytes(redis, f"{ns}:*:ch:*")
    for low in range(0, calls, 1_000):
        conversions = [
            {"counter_id": 100_000 + n % 10, "conversion_id": f"o{n}", "ClientId": str(10**15 + n), "Target": "paid",
             "DateTime": now - 600, "source": "crm"}
            for n in range(low, min(low + 1_000, calls))
        ]  # fmt: skip
        rt.producer.submit(conversions, kind=UploadKind.CONVERSIONS)
    drain(rt, seal_all=True, time_budget=600)
    both_keys, both_bytes, both_enc = _bytes(redis, f"{ns}:*:dd:*")
    for key in redis.scan_iter(f"{ns}:*", count=10_000):
        redis.unlink(key)
    redis.close()
    rt.close()
    return {
        "calls": calls,
        "buckets_per_shard": buckets,
        "dedup_with_ref_bytes_per_call": round(call_bytes / calls, 1),
        "dedup_bytes_per_conversion": round((both_bytes - call_bytes) / calls, 1),
        "caller_history_bytes_per_caller": round(caller_bytes / calls, 1),
        "hashes": {"dd_calls": call_keys, "dd_all": both_keys, "ch": caller_keys},
        "encodings": sorted(call_enc | both_enc | caller_enc),
    }
