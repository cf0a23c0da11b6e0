"""Cost per call (issue 18): CPU of every process and Redis bytes, measured around one section.

* CPU: ``utime + stime`` of each process group (psutil, the process, its live children and the
  children it has reaped), and of the benchmark's own ``redis-server`` from ``INFO cpu``
  (``used_cpu_sys + used_cpu_user``, every thread of the server), as deltas over the section.
* Redis bytes: ``INFO memory`` ``used_memory`` deltas (peak while calls are in flight, and after
  every batch is final), and a census of the keys left after the batches are final: each key
  class (the name part after the shard tag: ``ref``, ``seen``, ``caller``, ``rows`` ...) counted
  with ``SCAN`` and sized with ``MEMORY USAGE`` on a sample of its keys, before and after the section
  (the difference is the section's).

Key classes that expire with the batch's rows (``rows``, ``marks``) are *kept for the rows' TTL*;
every other class is *retained* (dedup window, caller history, batch records).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import defaultdict
from typing import Any

import psutil
from redis import Redis

# Key classes that go with the batch's rows (rows TTL after final), not with the dedup window.
WITH_ROWS = {"rows", "marks"}
# Key classes of the dedup marks and call refs (one key per call before issue 18, bucketed hashes after).
DEDUP_CLASSES = {"ref", "seen", "dd"}
_CLASS_RE = re.compile(r"^[^:]*:(?:\{[^}]*\}:)?([A-Za-z_]+)")


def process_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes, their live children and the children they have reaped."""
    total = 0.0
    seen: set[int] = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system + (t.children_user + t.children_system if proc.pid == pid else 0.0)
    return total


def redis_cpu(redis: Redis) -> float:
    info = redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def command_usec(redis: Redis) -> dict[str, float]:
    """Microseconds spent in each command since the server started (INFO commandstats)."""
    stats = redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): float(value["usec"]) for name, value in stats.items()}


def redis_used(redis: Redis) -> int:
    return int(redis.info("memory")["used_memory"])


class MemoryPeak:
    """Polls ``used_memory`` every ``interval`` seconds; the highest value seen."""

    def __init__(self, url: str, interval: float = 0.2) -> None:
        self._redis = Redis.from_url(url)
        self.peak = redis_used(self._redis)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-peak", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, redis_used(self._redis))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self.peak = max(self.peak, redis_used(self._redis))
        self._redis.close()
        return self.peak


def key_census(redis: Redis, pattern: str, sample: int = 300) -> dict[str, dict[str, float]]:
    """Per key class: how many keys, and their bytes (``MEMORY USAGE`` of a sample, extrapolated)."""
    keys: dict[str, list[bytes]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for key in redis.scan_iter(pattern, count=10_000):
        match = _CLASS_RE.match(key.decode(errors="replace"))
        name = match.group(1) if match else "other"
        counts[name] += 1
        if len(keys[name]) < sample:
            keys[name].append(key)
    census: dict[str, dict[str, float]] = {}
    for name, some in keys.items():
        pipe = redis.pipeline(transaction=False)
        for key in some:
            pipe.memory_usage(key, samples=0)
        sizes = [int(s or 0) for s in pipe.execute()]
        mean = sum(sizes) / max(len(sizes), 1)
        census[name] = {"keys": counts[name], "bytes": round(mean * counts[name])}
    return census


class Costs:
    """Deltas of CPU (per process group and Redis) and Redis memory over one section."""

    def __init__(self, redis_url: str, groups: dict[str, list[int]], pattern: str) -> None:
        self.url = redis_url
        self.redis = Redis.from_url(redis_url)
        self.pattern = pattern
        self.census0 = key_census(self.redis, pattern)  # what earlier sections left: not this one's
        self.groups = groups
        self.cpu0 = {name: process_cpu(pids) for name, pids in groups.items()}
        self.redis_cpu0 = redis_cpu(self.redis)
        self.commands0 = command_usec(self.redis)
        self.commands: dict[str, float] = {}
        self.used0 = redis_used(self.redis)
        self.peak = MemoryPeak(redis_url)
        self.cpu: dict[str, float] = {}

    def stop_cpu(self, extra_cpu: dict[str, float]) -> None:
        """End the CPU window; ``extra_cpu`` adds groups measured elsewhere (producer processes)."""
        self.cpu = {name: process_cpu(pids) - self.cpu0[name] for name, pids in self.groups.items()}
        self.cpu["redis"] = redis_cpu(self.redis) - self.redis_cpu0
        now = command_usec(self.redis)
        self.commands = {name: usec - self.commands0.get(name, 0.0) for name, usec in now.items()}
        self.cpu.update(extra_cpu)

    def report(self, calls: int, *, final: bool = True) -> dict[str, Any]:
        """µs of CPU per call of every group and their sum; Redis bytes per call in flight and left."""
        peak = self.peak.stop()
        per = max(calls, 1)
        us = {name: round(seconds / per * 1e6, 2) for name, seconds in self.cpu.items()}
        ours = [name for name in us if name != "emulator"]
        result: dict[str, Any] = {
            "cpu_us_per_call": {**us, "total_without_emulator": round(sum(us[n] for n in ours), 2)},
            "redis_bytes_per_call_in_flight_peak": round((peak - self.used0) / per, 1),
            # Where Redis's time goes: INFO commandstats usec per call (a script's commands are counted
            # both on their own and inside its evalsha).
            "redis_us_per_call_by_command": {
                name: round(usec / per, 2)
                for name, usec in sorted(self.commands.items(), key=lambda kv: -kv[1])[:12]
                if usec / per >= 0.05
            },
        }
        if final:
            census = key_census(self.redis, self.pattern)
            for name, before in self.census0.items():
                now = census.setdefault(name, {"keys": 0, "bytes": 0})
                now["keys"] -= before["keys"]
                now["bytes"] -= before["bytes"]
            retained = {k: v for k, v in census.items() if k not in WITH_ROWS}
            result.update(
                redis_bytes_per_call_after_final=round((redis_used(self.redis) - self.used0) / per, 1),
                redis_bytes_per_call_retained=round(sum(v["bytes"] for v in retained.values()) / per, 1),
                redis_bytes_per_call_with_rows=round(
                    sum(v["bytes"] for k, v in census.items() if k in WITH_ROWS) / per, 1
                ),
                redis_keys=census,
            )
        self.redis.close()
        return result


def wait_final(redis: Redis, namespace: str, shards: int, timeout: float) -> bool:
    """Until no batch waits for upload or for a final status (the reconciler polls Metrica)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pipe = redis.pipeline(transaction=False)
        for shard in range(shards):
            pipe.zcard(f"{namespace}:{{s{shard}}}:sealed")
            pipe.zcard(f"{namespace}:{{s{shard}}}:uploaded")
        if not any(pipe.execute()):
            return True
        time.sleep(0.5)
    return False
