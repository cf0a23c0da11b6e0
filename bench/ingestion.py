"""The ingestion section of the benchmark (the HTTP service under ``wrk``: single calls, bulk NDJSON,
the session API, with the CPU of the service and of Redis per request) and the description of the
machine a run was measured on."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from redis import Redis

from bench import http_load
from bench.costs import redis_cpu
from bench.load import COUNTER_BASE
from bench.stack import ROOT, Infra, python_env, stop_group
from config.settings import Settings
from worker.dataplane.keys import Keys
from worker.intake.routing import Route, RoutingTable

SESSION_COUNTER = 9_999_999
SESSION_VISITORS = 500


def ingest(infra: Infra, *, seconds: float, bulk_lines: int, workers: int, numbers: int = 10) -> dict[str, Any]:
    """The ingestion service under load on loopback: single-call requests/s, bulk calls/s, CPU per 1,000."""
    from standalone.redis_server import free_port  # noqa: PLC0415

    infra.flush()
    namespace = "benchingest"
    settings = Settings(_env_file=None, redis_url=infra.redis_url, namespace=namespace)
    redis = Redis.from_url(infra.redis_url)
    RoutingTable(redis, Keys(namespace, settings.shards)).add(
        [Route(http_load.tracking_number(i), COUNTER_BASE + i) for i in range(numbers)]
        # The session API's pool: one counter with as many dynamic numbers as visitors come back.
        + [Route(f"+7499{n:07d}", SESSION_COUNTER, "dynamic") for n in range(SESSION_VISITORS)]
    )
    redis.close()
    port = free_port()
    env = {
        "REDIS_URL": infra.redis_url,
        "CALLTRACK_REDIS_URL": infra.redis_url,
        "CALLTRACK_NAMESPACE": namespace,
        "CALLTRACK_LOG_LEVEL": "WARNING",
        "CALLTRACK_LOG_FORMAT": "json",
        # One load generator is one client IP: lift the per-IP limit that guards the session API.
        "CALLTRACK_SESSION_RATE_PER_IP": "1000000",
        "CALLTRACK_SESSION_RATE_PER_COUNTER": "1000000",
        # ... and the per-address edge caps of issue 22 (32 connections opening at once are 32 unfinished
        # heads from one address, past the default 20): a deployment's clients are many addresses.
        "CALLTRACK_INGEST_MAX_CONNECTIONS_PER_CLIENT": "10000",
        "CALLTRACK_INGEST_MAX_UNFINISHED_HEADS_PER_CLIENT": "10000",
    }
    log = (infra.log_dir / "ingest.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "ingest", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT, env=python_env(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/readyz", proc)
        service = psutil.Process(proc.pid)
        result: dict[str, Any] = {"workers": workers, "generator": "wrk" if http_load.have_wrk() else "python"}
        if not http_load.have_wrk():
            print(
                "wrk is missing (./scripts/ensure-wrk installs it): the Python load generator runs instead",
                file=sys.stderr,
                flush=True,
            )
        run = f"ing{time.time_ns()}"
        http_load.single_calls(url, run + "w", numbers, 1.0, 8)  # warm-up: imports, caches, connections
        redis = Redis.from_url(infra.redis_url)
        cpu0, rcpu0 = _cpu(service), redis_cpu(redis)
        single = http_load.single_calls(url, run, numbers, seconds, 32)
        cpu1, rcpu1 = _cpu(service), redis_cpu(redis)
        # Two bulk requests in flight per service process: each is a 1,000-line batch that keeps one
        # process busy, so fewer connections than that would leave service processes idle.
        bulk = http_load.bulk_calls(url, run, numbers, bulk_lines, seconds, 2 * workers)
        cpu2, rcpu2 = _cpu(service), redis_cpu(redis)
        sessions = http_load.session_requests(url, SESSION_COUNTER, SESSION_VISITORS, seconds, 32)
        cpu3, rcpu3 = _cpu(service), redis_cpu(redis)
        redis.close()
        bulk_calls = bulk.requests * bulk_lines

        def us(seconds: float, n: int) -> float:
            return round(seconds / max(n, 1) * 1e6, 1)

        result["cpu_us_per_call"] = {
            "single_ingestion": us(cpu1 - cpu0, single.requests),
            "single_redis": us(rcpu1 - rcpu0, single.requests),
            "bulk_ingestion": us(cpu2 - cpu1, bulk_calls),
            "bulk_redis": us(rcpu2 - rcpu1, bulk_calls),
            "session_ingestion": us(cpu3 - cpu2, sessions.requests),
            "session_redis": us(rcpu3 - rcpu2, sessions.requests),
        }
        result.update(
            single_requests=single.requests,
            single_errors=single.errors,
            single_rps=round(single.rate, 1),
            single_cpu_seconds_per_1000=round((cpu1 - cpu0) / max(single.requests, 1) * 1000, 3),
            bulk_lines=bulk_lines,
            bulk_requests=bulk.requests,
            bulk_errors=bulk.errors,
            bulk_calls_per_second=round(bulk_calls / bulk.seconds, 1) if bulk.seconds else 0.0,
            bulk_cpu_seconds_per_1000=round((cpu2 - cpu1) / max(bulk_calls, 1) * 1000, 3),
            session_requests=sessions.requests,
            session_errors=sessions.errors,
            session_rps=round(sessions.rate, 1),
            session_cpu_seconds_per_1000=round((cpu3 - cpu2) / max(sessions.requests, 1) * 1000, 3),
            seconds=seconds,
        )
        return result
    finally:
        stop_group(proc)


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer")
        time.sleep(0.1)


def _cpu(proc: psutil.Process) -> float:
    """utime + stime of the process and its live children (uvicorn workers), in seconds."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "redis": _redis_version(),
    }


def _redis_version() -> str:
    from standalone.redis_server import find_binary  # noqa: PLC0415

    binary = find_binary()
    if binary is None:
        return ""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout  # noqa: S603
    return out.strip()
