"""The measurements of issue 7, each on the real parts started by :mod:`bench.stack`."""

from __future__ import annotations

import contextlib
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis

from bench.costs import Costs, redis_used, wait_final
from bench.emulator_proc import bench_token
from bench.load import make_call, produce, produce_paced
from bench.stack import ROOT, Emulator, Fleet, FleetSpec, Infra, PipelineConfig, RssSampler, python_env, stop_group
from config.settings import Settings
from worker.accounts.model import AccountIn, parse
from worker.runtime import Runtime

WORKER_RPS = 28  # CALLTRACK_QUOTA_REQUESTS_PER_SECOND default: the worker's own per-IP cap


class ScenarioTimeout(RuntimeError):
    pass


@dataclass
class Stack:
    """An emulator and a worker fleet on the harness's Redis, for one pipeline configuration."""

    infra: Infra
    config: PipelineConfig
    fleet_spec: FleetSpec
    profile: bool = False
    emulator: Emulator = field(init=False)
    fleet: Fleet = field(init=False)
    settings: Settings = field(init=False)
    profilers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __enter__(self) -> Stack:
        self.infra.flush()
        rps = 30 * self.fleet_spec.egress_ips
        self.emulator = Emulator(self.infra.log_dir, rps_per_ip=rps, accounts=self.config.accounts)
        self.settings = self.config.settings(self.infra.redis_url, self.emulator.base_url)
        env = self.config.env(self.infra.redis_url, self.emulator.base_url)
        self.fleet = Fleet(env, self.fleet_spec, self.infra.log_dir)
        self.fleet.start()
        self.warm_up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_profiles()
        self.fleet.stop()
        self.emulator.stop()

    def warm_up(self, timeout: float = 120.0) -> None:
        """One call through every part, so no process start-up counts in a measurement."""
        before = self.emulator.rows()
        produce(self.settings, f"warm{time.time_ns()}", 1, 1, 1)
        self.wait_rows(before + 1, timeout)

    def wait_rows(self, target: int, timeout: float, *, stall: float | None = None) -> int:
        """Until the emulator holds ``target`` rows; ``stall``: give up sooner when no row came for that long."""
        began = time.monotonic()
        deadline = began + timeout
        last, moved = -1, began
        while True:
            rows = self.emulator.rows()
            if rows >= target:
                return rows
            now = time.monotonic()
            if rows != last:
                last, moved = rows, now
            self.fleet.check()
            if now > deadline or (stall is not None and now - moved > stall):
                raise ScenarioTimeout(f"{rows} of {target} rows at the emulator after {now - began:.0f} s")
            time.sleep(0.2)

    def last_answer(self, since: float) -> tuple[float, int]:
        """The latest 200 answer to an upload that arrived after ``since``, and how many there were."""
        arrived, answered = self.emulator.upload_times()
        times = [answered[c] for c, t in arrived.items() if t >= since and c in answered]
        return (max(times) if times else time.time()), len(times)

    def process_groups(self) -> dict[str, list[int]]:
        """The pids whose CPU a section reports: the Celery workers and beat, and the emulator."""
        return {"worker": [p.pid for p in self.fleet.procs], "emulator": [self.emulator.proc.pid]}

    def wait_final(self, timeout: float) -> bool:
        redis = Redis.from_url(self.infra.redis_url)
        try:
            return wait_final(redis, self.config.namespace, self.config.shards, timeout)
        finally:
            redis.close()

    def start_profiles(self, work_dir: Path, name: str) -> None:
        spy = Path(sys.executable).with_name("py-spy")
        for i, pid in enumerate(self.fleet.worker_pids):
            out = work_dir / f"profile-{name}-worker{i}.txt"
            args = [str(spy), "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--rate", "50",
                    "--output", str(out), "--nonblocking"]  # fmt: skip
            self.profilers.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # noqa: S603

    def stop_profiles(self) -> None:
        for proc in self.profilers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        self.profilers.clear()


def end_to_end(
    stack: Stack,
    *,
    calls: int,
    counters: int,
    producers: int,
    counter_base: int,
    timeout: float,
    work_dir: Path,
    accounts: int = 0,
) -> dict[str, Any]:
    """Calls/s from the first producer call to the last upload answered by the emulator; with ``accounts``
    the counters are first spread over that many registry accounts (one login each)."""
    before = stack.emulator.rows()
    registered = register_accounts(stack.settings, counters, counter_base, accounts) if accounts else 0
    if stack.profile:
        stack.start_profiles(work_dir, f"e2e{counters}")
    run = f"e2e{counters}x{time.time_ns()}"
    costs = Costs(stack.infra.redis_url, stack.process_groups(), f"{stack.config.namespace}:*")
    producer_cpu: list[float] = []
    accepted, began, produced = produce(
        stack.settings.model_copy(), run, calls, counters, producers, counter_base=counter_base, cpu=producer_cpu
    )
    stack.wait_rows(before + calls, timeout)
    costs.stop_cpu({"producer": sum(producer_cpu)})
    ended, uploads = stack.last_answer(began)
    stack.stop_profiles()
    seconds = ended - began
    final = stack.wait_final(min(timeout, 60.0))
    return {
        **costs.report(accepted),
        "batches_final": final,
        "calls": accepted,
        "counters": counters,
        "accounts": accounts,
        "registered_counters": registered,
        "logins_uploading": stack.emulator.bench_logins_used(),
        "producers": producers,
        "produce_seconds": round(produced - began, 3),
        "produce_rate": round(accepted / (produced - began), 1),
        "seconds": round(seconds, 3),
        "rate": round(accepted / seconds, 1),
        "uploads": uploads,
        "quota_floor_seconds": round(uploads / (WORKER_RPS * stack.fleet_spec.egress_ips), 1),
        "flush_max_age": stack.config.flush_max_age,
        "flush_max_rows": stack.config.flush_max_rows,
    }


def register_accounts(settings: Settings, counters: int, counter_base: int, accounts: int) -> int:
    """Spread the run's counters over ``accounts`` registry accounts (one Yandex login each), by one bulk
    sync through the registry, as a deployment's own application would push them. Not timed."""
    runtime = Runtime(settings)
    specs = [
        parse(AccountIn, {
            "id": f"client-{a}",
            "tokens": [{"token": bench_token(a)}],
            "counters": [{"id": c} for c in range(counter_base + a, counter_base + counters, accounts)],
        })
        for a in range(accounts)
    ]  # fmt: skip
    runtime.accounts.sync(specs)
    registered = sum(len(a.counters) for a in runtime.accounts.accounts())
    runtime.close()
    return registered


def backlog(
    stack: Stack, *, calls: int, counters: int, producers: int, counter_base: int, timeout: float
) -> dict[str, Any]:
    """Enqueue with the fleet stopped, start it, time the drain; peak RSS of every worker process."""
    stack.fleet.stop()
    before = stack.emulator.rows()
    run = f"backlog{calls}x{time.time_ns()}"
    redis = Redis.from_url(stack.infra.redis_url)
    used0 = redis_used(redis)
    redis.close()
    accepted, began, produced = produce(stack.settings, run, calls, counters, producers, counter_base=counter_base)
    redis = Redis.from_url(stack.infra.redis_url)
    used = redis_used(redis)
    redis_mb = used / 2**20
    redis.close()
    sampler = RssSampler().start()
    started = time.time()
    stack.fleet.start(sampler)
    try:
        stack.wait_rows(before + calls, timeout)
    finally:
        peaks = sampler.stop()
    ended, uploads = stack.last_answer(started)
    workers = [{"pid": p.pid, "role": p.role, "peak_rss_mb": round(p.peak_rss_mb, 1)} for p in peaks]
    return {
        "calls": accepted,
        "counters": counters,
        "enqueue_seconds": round(produced - began, 3),
        "redis_used_mb_with_backlog": round(redis_mb, 1),
        "redis_bytes_per_call_in_flight": round((used - used0) / max(accepted, 1), 1),
        "drain_seconds": round(ended - started, 3),
        "drain_rate": round(accepted / (ended - started), 1),
        "uploads": uploads,
        "max_worker_peak_rss_mb": max((p.peak_rss_mb for p in peaks), default=0.0),
        "workers": workers,
    }


def latency(
    stack: Stack, *, rate: float, seconds: float, counters: int, counter_base: int, timeout: float
) -> dict[str, Any]:
    """Enqueue-to-upload-request latency at a steady rate: producer stamp vs. the emulator's arrival."""
    before = stack.emulator.rows()
    run = f"lat{time.time_ns()}"
    sent = produce_paced(stack.settings, run, rate, seconds, counters, counter_base=counter_base)
    stack.wait_rows(before + sent, timeout)
    lat = stamped_latencies(stack.emulator, run, range(counter_base, counter_base + counters))
    return {
        "rate": round(rate, 1),
        "seconds": seconds,
        "calls": sent,
        "measured": len(lat),
        "flush_max_age": stack.config.flush_max_age,
        "drain_interval": stack.config.drain_interval,
        "p50_seconds": round(_pct(lat, 50), 3),
        "p99_seconds": round(_pct(lat, 99), 3),
        "max_seconds": round(lat[-1], 3) if lat else 0.0,
        "mean_seconds": round(statistics.fmean(lat), 3) if lat else 0.0,
    }


def stamped_samples(emulator: Emulator, run: str, counters: Iterable[int]) -> list[tuple[float, float, str]]:
    """(submit time, enqueue-to-upload-request seconds, batch id) of every stamped call of ``run`` stored for
    ``counters``: the producer's stamp (``?t=`` in ``CallTrackerURL``, see ``make_call``) against the
    moment the emulator received the upload request that carried it (its batch id is the upload's comment)."""
    arrived, _ = emulator.upload_times()
    samples: list[tuple[float, float, str]] = []
    for counter in counters:
        for row in emulator.stored_rows(counter):
            url = row.get("CallTrackerURL", "")
            if f"/{run}/" in url and "?t=" in url and row["comment"] in arrived:
                stamp = int(url.rsplit("?t=", 1)[1]) / 1000
                samples.append((stamp, arrived[row["comment"]] - stamp, row["comment"]))
    return samples


def stamped_latencies(emulator: Emulator, run: str, counters: Iterable[int]) -> list[float]:
    """The latencies of :func:`stamped_samples`, sorted."""
    return sorted(sample[1] for sample in stamped_samples(emulator, run, counters))


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def naive(
    infra: Infra, emulator: Emulator, *, calls: int, counters: int, flush_rows: int, timeout: float
) -> dict[str, Any]:
    """One Celery task per call: enqueue rate with the worker stopped, then its consume rate."""
    from bench import naive as naive_app  # noqa: PLC0415

    naive_app.configure(infra.redis_url)
    redis = Redis.from_url(infra.redis_url, decode_responses=True)
    for key in redis.scan_iter(naive_app.PREFIX + "*", count=10_000):  # the Redis may hold millions of keys
        redis.delete(key)
    redis.set(naive_app.PREFIX + "expect", calls)
    now = int(time.time())
    run = f"naive{time.time_ns()}"
    payloads = [make_call(run, n, counters, now, counter_base=900_000) for n in range(calls)]
    began = time.time()
    for call in payloads:
        naive_app.store_call.delay(call)
    enqueued = time.time() - began
    celery = str(Path(sys.executable).with_name("celery"))
    log = (infra.log_dir / "naive-worker.log").open("ab")
    env = {
        "BENCH_NAIVE_REDIS_URL": infra.redis_url,
        "BENCH_NAIVE_EMULATOR_URL": emulator.base_url,
        "BENCH_NAIVE_FLUSH_ROWS": str(flush_rows),
    }
    proc = subprocess.Popen(  # noqa: S603
        [celery, "-A", "bench.naive", "worker", "--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING",
         "--without-gossip", "--without-mingle", "--hostname", "naive@%h"],
        cwd=ROOT, env=python_env(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while redis.get(naive_app.PREFIX + "last") is None:
            if proc.poll() is not None:
                raise RuntimeError(f"the naive worker exited; see {infra.log_dir}/naive-worker.log")
            if time.monotonic() > deadline:
                done = redis.get(naive_app.PREFIX + "done")
                raise ScenarioTimeout(f"naive: {done!r} of {calls} calls consumed")
            time.sleep(0.2)
        first = float(redis.get(naive_app.PREFIX + "first") or 0)
        last = float(redis.get(naive_app.PREFIX + "last") or 0)
    finally:
        stop_group(proc)
        redis.close()
    enqueue_rate = calls / enqueued
    consume_rate = calls / (last - first)
    return {
        "calls": calls,
        "counters": counters,
        "flush_rows": flush_rows,
        "enqueue_seconds": round(enqueued, 3),
        "enqueue_rate": round(enqueue_rate, 1),
        "consume_seconds": round(last - first, 3),
        "consume_rate": round(consume_rate, 1),
        "rate": round(min(enqueue_rate, consume_rate), 1),
    }
