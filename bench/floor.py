"""The ``floor`` section (issue 26): bare endpoints under the ingestion section's load, in the same run.

``bench/floor_app.py`` served by ``uvicorn --http httptools`` with as many processes as the ingestion
section, loaded by the same generator (wrk when installed) with the same connections and seconds:
single calls (one JSON parse, one ``XADD``) and bulk NDJSON (parse, pipelined ``XADD``). The report
prints every ingestion figure as a share of its floor (``bench/report.py``).
"""

from __future__ import annotations

import time
from typing import Any

from redis import Redis

from bench.ingestion import generator, load_figures, served, single_and_bulk, us_per
from bench.stack import Infra

STREAM = "benchfloor:stream"


def floor(infra: Infra, *, seconds: float, bulk_lines: int, workers: int, numbers: int = 10) -> dict[str, Any]:
    """Single-call requests/s and bulk calls/s of the bare endpoints, with their CPU per call."""
    infra.flush()
    env = {"BENCH_FLOOR_REDIS_URL": infra.redis_url, "BENCH_FLOOR_STREAM": STREAM}
    args = ["-m", "uvicorn", "bench.floor_app:app", "--http", "httptools", "--workers", str(workers),
            "--log-level", "warning", "--no-access-log", "--host", "127.0.0.1"]  # fmt: skip
    with served(infra, args, env, "floor") as (url, service):
        result: dict[str, Any] = {"workers": workers, "generator": generator()}
        redis = Redis.from_url(infra.redis_url)
        single, bulk, (cpu0, cpu1, cpu2), (rcpu0, rcpu1, rcpu2) = single_and_bulk(
            url, service, redis, f"floor{time.time_ns()}", numbers=numbers, seconds=seconds, bulk_lines=bulk_lines,
            workers=workers,
        )  # fmt: skip
        stored = int(redis.xlen(STREAM))
        redis.delete(STREAM)
        redis.close()
        bulk_calls = bulk.requests * bulk_lines
        result["cpu_us_per_call"] = {
            "single_floor": us_per(cpu1 - cpu0, single.requests),
            "single_redis": us_per(rcpu1 - rcpu0, single.requests),
            "bulk_floor": us_per(cpu2 - cpu1, bulk_calls),
            "bulk_redis": us_per(rcpu2 - rcpu1, bulk_calls),
        }
        result.update(
            **load_figures("single", single),
            bulk_lines=bulk_lines,
            **load_figures("bulk", bulk, bulk_lines),
            stream_entries=stored,
            seconds=seconds,
        )
        if stored < single.requests + bulk_calls:  # every 2xx answer must have written its entries
            raise RuntimeError(f"the floor answered {single.requests + bulk_calls:,} calls but stored {stored:,}")
        return result
