"""Call events for the benchmark, and producer processes that submit them through ``Producer.submit``."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from typing import Any

from config.settings import Settings
from worker.runtime import Runtime

CHUNK = 1_000
COUNTER_BASE = 100_000


def make_call(
    run: str, n: int, counters: int, now: int, stamp_ms: int | None = None, *, counter_base: int = COUNTER_BASE
) -> dict[str, Any]:
    """One valid call: unique per (run, n); ``stamp_ms`` rides in ``CallTrackerURL`` for latency."""
    tracker = f"https://tracker.example/{run}/{n}" + (f"?t={stamp_ms}" if stamp_ms is not None else "")
    return {
        "counter_id": counter_base + n % counters,
        "call_id": f"{run}-{n}",
        "provider": "bench",
        "ClientId": str(1_556_018_960_000_000_000 + n),
        "DateTime": now - 600 - n % 3600,
        "PhoneNumber": f"+7912{n % 10_000_000:07d}",
        "TalkDuration": n % 600,
        "HoldDuration": n % 30,
        "CallMissed": 0,
        "CallTrackerURL": tracker,
    }


def chunks(start: int, stop: int, size: int = CHUNK) -> Iterator[tuple[int, int]]:
    for low in range(start, stop, size):
        yield low, min(low + size, stop)


def _produce(args: tuple[Settings, str, int, int, int, int, int]) -> tuple[int, float, float, float]:
    settings, run, start, stop, counters, now, base = args
    rt = Runtime(settings)
    accepted = 0
    began = time.time()
    cpu0 = time.process_time()
    for low, high in chunks(start, stop):
        result = rt.producer.submit([make_call(run, n, counters, now, counter_base=base) for n in range(low, high)])
        if result.rejected:
            raise RuntimeError(f"the producer rejected a benchmark call: {result.rejected[0].reason}")
        accepted += len(result.accepted)
    ended = time.time()
    cpu = time.process_time() - cpu0
    rt.close()
    return accepted, began, ended, cpu


def produce(
    settings: Settings,
    run: str,
    calls: int,
    counters: int,
    processes: int,
    *,
    counter_base: int = COUNTER_BASE,
    cpu: list[float] | None = None,
) -> tuple[int, float, float]:
    """Submit ``calls`` calls from ``processes`` producer processes; (accepted, first start, last end).

    ``cpu`` receives the CPU seconds (user + system) each producer process spent submitting.
    """
    now = int(time.time())
    share = -(-calls // processes)
    jobs = [
        (settings, run, low, min(low + share, calls), counters, now, counter_base) for low in range(0, calls, share)
    ]
    if len(jobs) == 1:
        results = [_produce(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
            results = pool.map(_produce, jobs)
    if cpu is not None:
        cpu.extend(r[3] for r in results)
    return sum(r[0] for r in results), min(r[1] for r in results), max(r[2] for r in results)


def produce_paced(
    settings: Settings,
    run: str,
    rate: float,
    seconds: float,
    counters: int,
    *,
    counter_base: int = COUNTER_BASE,
    stop: threading.Event | None = None,
) -> int:
    """Submit at a steady ``rate`` calls/s for ``seconds`` (or until ``stop`` is set), in ticks of 50 ms,
    each call stamped; a rejected call raises (every call sent must be one the pipeline took)."""
    rt = Runtime(settings)
    now = int(time.time())
    tick = 0.05
    sent = 0
    began = time.monotonic()
    while True:
        elapsed = time.monotonic() - began
        if elapsed >= seconds or (stop is not None and stop.is_set()):
            break
        due = int(rate * min(elapsed + tick, seconds))
        if due > sent:
            stamp = int(time.time() * 1000)
            batch = [make_call(run, n, counters, now, stamp, counter_base=counter_base) for n in range(sent, due)]
            result = rt.producer.submit(batch)
            if result.rejected:
                raise RuntimeError(f"the producer rejected a paced call: {result.rejected[0].reason}")
            sent = due
        time.sleep(max(0.0, began + elapsed + tick - time.monotonic()))
    rt.close()
    return sent
