"""The real parts a benchmark runs on: its own Redis server, the emulator process, Celery workers and beat.

Quotas. The emulator enforces Metrica's quotas and the worker respects them fleet-wide through Redis.
The benchmark keeps the per-IP rate (30 requests/s at the emulator, the worker's own 28/s) and the 3
parallel requests per login exactly as in production, because they are what a real deployment meets.
It lifts only the *daily* budget (5,000 requests per login): 10,000 counters need at least 10,000
uploads, which one login cannot make in a day, and a real deployment of that size spreads its counters
over several logins: the many-counter run registers its counters in the account registry spread over
``many_accounts`` accounts (100), each with its own token and login at the emulator, by one bulk sync.
The daily cap stays lifted (emulator without it, ``CALLTRACK_QUOTA_DAILY_PER_LOGIN`` at 10,000,000) for
the runs of 10 counters on one login and 1,000,000 calls. With ``egress_ips`` above 1 every worker process gets its own
``CALLTRACK_EGRESS_ID`` and the emulator's per-IP cap is multiplied by the same number: a fleet on
several hosts, each with its own address (on loopback every process shares 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from cryptography.fernet import Fernet

from config.settings import Settings
from standalone.cluster import LocalCluster
from standalone.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent


def python_env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra, "PYTHONPATH": str(ROOT)}


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL what is left (prefork children share the group)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


class Emulator:
    """``python -m bench.emulator_proc`` as a child process (so it does not share the harness's GIL)."""

    def __init__(self, log_dir: Path, *, rps_per_ip: int = 30, accounts: int = 0) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        log = (log_dir / f"emulator-{self.port}.log").open("ab")
        args = ["--port", str(self.port), "--rps-per-ip", str(rps_per_ip), "--accounts", str(accounts)]
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "bench.emulator_proc", *args],
            cwd=ROOT, env=python_env({}), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.http = httpx.Client(base_url=self.base_url, timeout=120.0)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/_emulator/health").status_code == 200:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start; see {log_dir}")
            time.sleep(0.1)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.http.get("/_emulator/stats").json()
        return result

    def rows(self) -> int:
        return int(self.stats()["rows"])

    def bench_logins_used(self) -> int:
        """How many of the benchmark's account logins made requests (per-login quota stats)."""
        logins: dict[str, dict[str, Any]] = self.http.get("/_emulator/logins").json()["logins"]
        return sum(1 for name, stats in logins.items() if name.startswith("bench-login-") and stats["requests"])

    def upload_times(self) -> tuple[dict[str, float], dict[str, float]]:
        """(comment -> arrival time, comment -> time of its 200 answer), wall clock."""
        data = self.http.get("/_bench/uploads").json()
        return data["arrived"], {k: v[0] for k, v in data["answered"].items()}

    def uploads(self, counter: int) -> list[dict[str, Any]]:
        """Every upload of ``counter`` as Metrica's ``uploading`` object plus its kind (no rows)."""
        body = self.http.get("/_emulator/uploads", params={"counter": counter, "rows": "0"}).json()
        result: list[dict[str, Any]] = body["uploads"]
        return result

    def stored_rows(self, counter: int) -> list[dict[str, str]]:
        """Every row stored for ``counter``, with its upload's ``comment`` (CSV columns as strings)."""
        import csv  # noqa: PLC0415
        import io  # noqa: PLC0415

        result: list[dict[str, str]] = []
        body = self.http.get("/_emulator/rows", params={"format": "csv", "counter": counter}).json()
        for upload in body["uploads"]:
            columns = upload["columns"]
            for values in csv.reader(io.StringIO(upload["csv"])):
                if values:
                    row = dict(zip(columns, values, strict=False))
                    row["comment"] = upload["comment"]
                    result.append(row)
        return result

    def stop(self) -> None:
        self.http.close()
        stop_group(self.proc, timeout=5)


@dataclass
class ProcPeak:
    """Peak resident memory of one process, from ``VmHWM`` (the kernel's high-water mark)."""

    pid: int
    role: str
    peak_rss_mb: float = 0.0


class RssSampler:
    """Polls every process of the given groups (including prefork children) for VmHWM/VmRSS."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.roots: dict[int, str] = {}
        self.peaks: dict[int, ProcPeak] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def watch(self, pid: int, role: str) -> None:
        self.roots[pid] = role

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        for pid, role in list(self.roots.items()):
            try:
                root = psutil.Process(pid)
                procs = [(root, role)] + [(child, f"{role} pool child") for child in root.children(recursive=True)]
            except psutil.Error:
                continue
            for proc, name in procs:
                mb = _peak_mb(proc)
                if mb is None:
                    continue
                peak = self.peaks.setdefault(proc.pid, ProcPeak(proc.pid, name))
                peak.peak_rss_mb = max(peak.peak_rss_mb, mb)

    def stop(self) -> list[ProcPeak]:
        self.sample()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        return sorted(self.peaks.values(), key=lambda p: p.pid)


def _peak_mb(proc: psutil.Process) -> float | None:
    try:
        text = Path(f"/proc/{proc.pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        if line.startswith(("VmHWM:", "VmRSS:")):
            name, value = line.split(":", 1)
            values[name] = int(value.split()[0]) / 1024
    if not values:
        return None
    return max(values.values())


@dataclass
class FleetSpec:
    """How many worker processes, and the prefork concurrency of each."""

    workers: int = 1
    concurrency: int = 2
    egress_ips: int = 1
    # "own": one more worker, for webhook deliveries only (CALLTRACK_WORKER_QUEUES=notify; the others
    # =main), as compose and Kubernetes deploy them; "shared": every worker takes every queue (=all).
    webhook_pool: str = "shared"


@dataclass
class Fleet:
    """``celery -A worker.main worker`` processes and one ``beat``, in their own process groups."""

    env: dict[str, str]
    spec: FleetSpec
    log_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker_pids: list[int] = field(default_factory=list)

    def start(self, sampler: RssSampler | None = None) -> None:
        celery = str(Path(sys.executable).with_name("celery"))
        own = self.spec.webhook_pool == "own"
        for i in range(self.spec.workers + own):
            env = dict(self.env)
            if self.spec.egress_ips > 1:
                env["CALLTRACK_EGRESS_ID"] = f"egress{i % self.spec.egress_ips}"
            name = f"bench{i}"
            if own:  # as compose and Kubernetes run them: the main pool, and the webhooks' own pool
                env["CALLTRACK_WORKER_QUEUES"] = "main"
                if i == self.spec.workers:
                    name, env["CALLTRACK_WORKER_QUEUES"] = "benchhooks", "notify"
            proc = self._spawn(
                [celery, "-A", "worker.main", "worker", "--pool", "prefork",
                 "--concurrency", str(self.spec.concurrency), "--hostname", f"{name}@%h", "--loglevel", "INFO",
                 "--without-gossip", "--without-mingle"],
                name.replace("bench", "worker"), env,
            )  # fmt: skip
            self.worker_pids.append(proc.pid)
            if sampler is not None:
                sampler.watch(proc.pid, f"worker{i}")
        self._spawn([celery, "-A", "worker.main", "beat", "--loglevel", "INFO"], "beat", self.env)

    def _spawn(self, args: list[str], name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(  # noqa: S603
            args, cwd=ROOT, env=python_env(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def check(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a worker process exited with {proc.returncode}; see {self.log_dir}")

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            stop_group(proc)
        self.procs.clear()
        self.worker_pids.clear()


@dataclass
class PipelineConfig:
    """The worker settings a scenario runs with (everything else: production defaults)."""

    namespace: str
    flush_max_age: float = 2.0
    flush_max_rows: int = 50_000
    drain_interval: float = 0.5
    shards: int = 4
    accounts: int = 0  # registry accounts (logins) the many-counter run spreads its counters over
    # The data plane on this Redis Cluster (issue 17); Celery's broker and redbeat stay on the harness's Redis.
    cluster_url: str | None = None
    dedup_buckets: int = 1024  # sized to the namespace's calls: about 100 marks a hash (worker/dataplane/keys.py)

    def env(self, redis_url: str, emulator_url: str) -> dict[str, str]:
        data = {"CALLTRACK_REDIS_URL": redis_url}
        if self.cluster_url is not None:
            data = {
                "CALLTRACK_REDIS_URL": self.cluster_url,
                "CALLTRACK_REDIS_CLUSTER": "true",
                "CALLTRACK_BROKER_URL": redis_url,
                "CALLTRACK_BEAT_REDIS_URL": redis_url,
            }
        return {
            "REDIS_URL": data["CALLTRACK_REDIS_URL"],
            **data,
            "CALLTRACK_NAMESPACE": self.namespace,
            "CALLTRACK_SHARDS": str(self.shards),
            "CALLTRACK_METRICA_BASE_URL": emulator_url,
            "CALLTRACK_METRICA_EMULATOR": "true",
            "CALLTRACK_EMULATOR_URL": emulator_url,  # Yandex ID's stand-in too (user info of registered tokens)
            "CALLTRACK_SECRET_KEYS": BENCH_SECRET_KEY,
            "CALLTRACK_FLUSH_MAX_ROWS": str(self.flush_max_rows),
            "CALLTRACK_FLUSH_MAX_AGE": str(self.flush_max_age),
            "CALLTRACK_DRAIN_INTERVAL": str(self.drain_interval),
            "CALLTRACK_QUOTA_DAILY_PER_LOGIN": "10000000",
            # Statuses are asked for soon after an upload, so a section sees its batches final and can
            # measure what Redis keeps after them (production: 120 s, every 10 s).
            "CALLTRACK_RECONCILE_FIRST_POLL_SECONDS": "3",
            "CALLTRACK_RECONCILE_INTERVAL": "2",
            "CALLTRACK_LOG_FORMAT": "json",
            "CALLTRACK_DEDUP_BUCKETS": str(self.dedup_buckets),
            # The fairness section's webhook receiver listens on loopback: allowed where the SSRF guard of
            # issue 22 exists (a release without the setting calls any address).
            **(
                {"CALLTRACK_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32"}
                if "webhook_allowed_networks" in Settings.model_fields
                else {}
            ),
        }

    def settings(self, redis_url: str, emulator_url: str) -> Settings:
        fields: dict[str, Any] = {
            k.removeprefix("CALLTRACK_").lower(): v
            for k, v in self.env(redis_url, emulator_url).items()
            if k.startswith("CALLTRACK_") and k != "CALLTRACK_REDIS_URL"
        }
        return Settings(_env_file=None, redis_url=self.cluster_url or redis_url, **fields)


# The account registry's key ring of a benchmark run (a made-up deployment; generated per harness run).
BENCH_SECRET_KEY = Fernet.generate_key().decode()


class Infra:
    """The harness's own Redis (AOF everysec, like production) and a log directory."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.log_dir = work_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(data_dir=work_dir / "redis", appendfsync="everysec")
        self.cluster: LocalCluster | None = None

    def __enter__(self) -> Infra:
        self.redis.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.redis.stop()
        if self.cluster is not None:
            self.cluster.__exit__()

    def start_cluster(self) -> str:
        """A local Redis Cluster (3 masters, 3 replicas; standalone/cluster.py) for the cluster runs."""
        if self.cluster is None:
            self.cluster = LocalCluster(base_dir=self.work_dir / "cluster").start()
        return self.cluster.url

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def flush(self) -> None:
        from redis import Redis  # noqa: PLC0415

        client = Redis.from_url(self.redis_url)
        try:
            client.flushall()
        finally:
            client.close()
        if self.cluster is not None:
            for node in self.cluster.masters():
                with Redis(port=node.port) as master:
                    master.flushall()
