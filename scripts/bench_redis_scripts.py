"""Redis CPU per call of the producers' script and of drain (issue 26, item 2).

``PYTHONPATH=. .venv/bin/python scripts/bench_redis_scripts.py [CALLS] [PORT]`` starts a Redis of its own
(``redis-server`` on PORT, 6399 by default, no persistence), submits the benchmark's calls
(``bench.load.make_call``, 10 counters, 2 shards) in chunks of 1,000, then drains every shard, and prints
Redis's CPU per call (``INFO cpu``) and the commands' time (``INFO commandstats``) of each phase. No
upload runs. Run it back to back on two checkouts.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

from redis import Redis

from bench.load import make_call
from config.settings import Settings
from worker.delivery.drain import drain_shard
from worker.runtime import Runtime


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 60_000
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 6399
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", folder],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            measure(calls, port)
        finally:
            server.terminate()
            server.wait()


def measure(calls: int, port: int) -> None:
    url = f"redis://127.0.0.1:{port}/0"
    settings = Settings(
        _env_file=None, redis_url=url, namespace="rs", shards=2, flush_max_rows=50_000, flush_max_age=600
    )
    runtime = Runtime(settings)
    redis = Redis.from_url(url, decode_responses=True)
    now = int(time.time())
    events = [make_call("rs", n, 10, now) for n in range(calls)]

    def cpu() -> float:
        info = redis.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def drain_all() -> None:
        for shard in range(settings.shards):
            while drain_shard(runtime, shard).read:
                pass

    def report(what: str, seconds: float, count: int) -> None:
        stats = {name.removeprefix("cmdstat_"): v["usec"] for name, v in redis.info("commandstats").items()}
        top = sorted(stats.items(), key=lambda item: -item[1])[:6]
        commands = ", ".join(f"{name} {usec / count:.2f}" for name, usec in top)
        print(f"{what}: Redis CPU {seconds / count * 1e6:.2f} us per call; commands (us per call): {commands}")

    runtime.producer.submit(events[:1_000])  # connections, scripts, shard pins
    drain_all()
    redis.config_resetstat()
    start = cpu()
    for low in range(1_000, calls, 1_000):
        runtime.producer.submit(events[low : low + 1_000])
    written = cpu()
    report("xadd_many.lua", written - start, calls - 1_000)
    redis.config_resetstat()
    written = cpu()
    drain_all()
    report("drain.lua", cpu() - written, calls - 1_000)
    runtime.close()


if __name__ == "__main__":
    main()
