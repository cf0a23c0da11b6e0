"""The ingestion section of the benchmark (the HTTP service under ``wrk``: single calls, bulk NDJSON,
the session API, with the CPU of the service and of Redis per request) and the description of the
machine a run was measured on."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
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
    with served(infra, ["-m", "ingest", "--workers", str(workers)], env, "ingest") as (url, service):
        result: dict[str, Any] = {"workers": workers, "generator": generator()}
        redis = Redis.from_url(infra.redis_url)
        single, bulk, (cpu0, cpu1, cpu2), (rcpu0, rcpu1, rcpu2) = single_and_bulk(
            url, service, redis, f"ing{time.time_ns()}", numbers=numbers, seconds=seconds, bulk_lines=bulk_lines,
            workers=workers,
        )  # fmt: skip
        sessions = http_load.session_requests(
            url, SESSION_COUNTER, SESSION_VISITORS, seconds, http_load.SESSION_CONNECTIONS
        )
        cpu3, rcpu3 = service_cpu(service), redis_cpu(redis)
        redis.close()
        bulk_calls = bulk.requests * bulk_lines
        result["cpu_us_per_call"] = {
            "single_ingestion": us_per(cpu1 - cpu0, single.requests),
            "single_redis": us_per(rcpu1 - rcpu0, single.requests),
            "bulk_ingestion": us_per(cpu2 - cpu1, bulk_calls),
            "bulk_redis": us_per(rcpu2 - rcpu1, bulk_calls),
            "session_ingestion": us_per(cpu3 - cpu2, sessions.requests),
            "session_redis": us_per(rcpu3 - rcpu2, sessions.requests),
        }
        result.update(
            **load_figures("single", single),
            single_cpu_seconds_per_1000=round((cpu1 - cpu0) / max(single.requests, 1) * 1000, 3),
            bulk_lines=bulk_lines,
            **load_figures("bulk", bulk, bulk_lines),
            bulk_cpu_seconds_per_1000=round((cpu2 - cpu1) / max(bulk_calls, 1) * 1000, 3),
            **load_figures("session", sessions),
            session_cpu_seconds_per_1000=round((cpu3 - cpu2) / max(sessions.requests, 1) * 1000, 3),
            seconds=seconds,
        )
        return result


def single_and_bulk(
    url: str,
    service: psutil.Process,
    redis: Redis,
    run: str,
    *,
    numbers: int,
    seconds: float,
    bulk_lines: int,
    workers: int,
) -> tuple[http_load.LoadResult, http_load.LoadResult, tuple[float, float, float], tuple[float, float, float]]:
    """The single-call then the bulk load, after a warm-up (imports, caches, connections), as the
    ingestion and floor sections both run them; the service's and Redis's CPU seconds before, between
    and after the two."""
    http_load.single_calls(url, run + "w", numbers, 1.0, 8)
    cpu0, rcpu0 = service_cpu(service), redis_cpu(redis)
    single = http_load.single_calls(url, run, numbers, seconds, http_load.SINGLE_CONNECTIONS)
    cpu1, rcpu1 = service_cpu(service), redis_cpu(redis)
    bulk = http_load.bulk_calls(url, run, numbers, bulk_lines, seconds, http_load.bulk_connections(workers))
    cpu2, rcpu2 = service_cpu(service), redis_cpu(redis)
    return single, bulk, (cpu0, cpu1, cpu2), (rcpu0, rcpu1, rcpu2)  # fmt: skip


def generator() -> str:
    if http_load.have_wrk():
        return "wrk"
    print(
        "wrk is missing (./scripts/ensure-wrk installs it): the Python load generator runs instead",
        file=sys.stderr,
        flush=True,
    )
    return "python"


def load_figures(name: str, load: http_load.LoadResult, lines: int = 0) -> dict[str, Any]:
    """A load run's figures under the section's names: 2xx answers only, errors beside them.

    ``<name>_rps`` (or ``<name>_calls_per_second`` for bulk, ``lines`` calls a request) is 2xx answers
    per second; no 2xx answer raises :class:`bench.http_load.NoAnswers` (the section fails)."""
    figures: dict[str, Any] = {
        f"{name}_requests": load.requests,
        f"{name}_errors": load.errors,
        f"{name}_non2xx": load.non2xx,
        f"{name}_socket_errors": load.socket_errors,
    }
    if lines:
        figures[f"{name}_calls_per_second"] = round(load.rate * lines, 1)
    else:
        figures[f"{name}_rps"] = round(load.rate, 1)
    return figures


def us_per(seconds: float, n: int) -> float:
    return round(seconds / max(n, 1) * 1e6, 1)


@contextlib.contextmanager
def served(infra: Infra, args: list[str], env: dict[str, str], name: str) -> Iterator[tuple[str, psutil.Process]]:
    """``python <args> --port P`` on loopback until it answers ``/readyz``: (its URL, its process)."""
    from standalone.redis_server import free_port  # noqa: PLC0415

    port = free_port()
    log = (infra.log_dir / f"{name}.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, *args, "--port", str(port)],
        cwd=ROOT, env=python_env(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/readyz", proc)
        yield url, psutil.Process(proc.pid)
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


def service_cpu(proc: psutil.Process) -> float:
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
