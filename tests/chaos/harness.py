"""Push calls through real worker processes while killing them, restarting Redis and having the
emulator fail, then count what Metrica holds: zero lost, zero duplicated, zero batches stored twice.

Kill points (failpoints set through CALLTRACK_FAILPOINTS in every worker process):

* ``after_drain``: stream entries read, buffered, acknowledged and batches sealed (one atomic
  script), before any upload task is sent. Reading and buffering are one step, so this is also the
  first moment after reading from the stream;
* ``after_seal_before_dispatch``: the same, a step later in the task;
* ``during_upload_request``: a timer kills the process while the upload request is in flight;
* ``after_upload_answer``: Metrica answered 200, the answer is not recorded yet;
* ``during_reconcile``: statuses fetched, not yet recorded.

On top of that the harness SIGKILLs whole worker processes (main and pool) at random, restarts the
Redis server with SIGKILL (AOF with ``appendfsync always``), and the emulator answers 503, 429
(its parallel limit is below the workers' own), adds latency and drops connections before and after
storing uploads.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.settings import Settings
from emulator.config import EmulatorConfig, QuotaConfig
from emulator.faults import FaultRule
from emulator.server import RunningEmulator, start_in_thread
from standalone.redis_server import RedisServer
from worker.errors import ProducerError
from worker.model.kinds import UploadKind
from worker.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
FAILPOINTS = {
    "after_drain": 0.02,
    "after_seal_before_dispatch": 0.02,
    "during_upload_request": 0.06,
    "after_upload_answer": 0.06,
    "during_reconcile": 0.03,
}


@dataclass
class ChaosReport:
    """What the emulator holds at the end, against what producers had accepted."""

    accepted: int = 0
    stored_rows: int = 0
    conversions: int = 0
    lost: int = 0
    duplicated: int = 0
    batches_stored_twice: int = 0
    uploads: int = 0
    worker_kills: int = 0
    worker_deaths: int = 0
    failpoint_kills: int = 0
    redis_restarts: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def table(self) -> str:
        rows = [
            ("events accepted (calls and conversions)", self.accepted),
            ("rows stored at Metrica", self.stored_rows),
            ("of which offline conversions", self.conversions),
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("batches stored twice", self.batches_stored_twice),
            ("uploads", self.uploads),
            ("worker processes killed by the harness", self.worker_kills),
            ("worker processes restarted after dying", self.worker_deaths),
            ("pool processes killed at failpoints", self.failpoint_kills),
            ("Redis restarts (SIGKILL, AOF always)", self.redis_restarts),
            *sorted((f"emulator {k}", v) for k, v in self.faults.items()),
            ("seconds", round(self.seconds, 1)),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)

    @property
    def exact(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.batches_stored_twice == 0


def chaos_event(n: int, counters: int) -> tuple[UploadKind, dict[str, Any]]:
    """Event ``n``: every fifth an offline conversion, the rest calls; its identifier is unique to n."""
    counter = 1000 + n % counters
    identifier = str(10**15 + n)
    when = int(datetime.now(UTC).timestamp()) - 600
    if n % 5 == 0:
        return UploadKind.CONVERSIONS, {
            "counter_id": counter,
            "conversion_id": f"chaos-{n}",
            "source": "chaos",
            ("PurchaseId" if n % 2 else "ClientId"): identifier,
            "Target": "chaos_goal",
            "DateTime": when,
            "Price": "1.00",
        }
    return UploadKind.CALLS, {
        "counter_id": counter,
        "call_id": f"chaos-{n}",
        "provider": "chaos",
        ("ClientId" if n % 4 else "Yclid"): identifier,
        "DateTime": when,
        "TalkDuration": n % 500,
    }


class Fleet:
    """Worker processes (prefork, failpoints armed) and one beat, restarted when they die."""

    def __init__(
        self, env: dict[str, str], workers: int, log_dir: Path, *, concurrency: int = 2, beats: int = 1
    ) -> None:
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.log_dir = log_dir
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * workers
        self.beats: list[subprocess.Popen[bytes] | None] = [None] * beats
        self.concurrency = concurrency
        self.deaths = 0
        self.kills = 0
        self.celery = str(Path(sys.executable).with_name("celery"))

    def _start(self, args: list[str], name: str, failpoints: bool) -> subprocess.Popen[bytes]:
        env = dict(self.env)
        if not failpoints:
            env.pop("CALLTRACK_FAILPOINTS", None)
        log = (self.log_dir / f"{name}.log").open("ab")
        return subprocess.Popen(
            [self.celery, "-A", "worker.main", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def ensure(self) -> None:
        for i, proc in enumerate(self.workers):
            if proc is None or proc.poll() is not None:
                if proc is not None:
                    self.deaths += 1
                self.workers[i] = self._start(
                    ["worker", "--pool", "prefork", "--concurrency", str(self.concurrency), "--hostname", f"w{i}@%h",
                     "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
                    f"worker{i}", failpoints=True,
                )  # fmt: skip
        for i, beat in enumerate(self.beats):
            if beat is None or beat.poll() is not None:
                self.beats[i] = self._start(["beat", "--loglevel", "INFO"], f"beat{i}", False)

    def kill_one(self, rng: random.Random) -> None:
        alive = [p for p in self.workers if p is not None and p.poll() is None]
        if alive:
            victim = rng.choice(alive)
            with _suppress():
                os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(10)
            self.kills += 1

    def stop(self) -> None:
        for proc in [*self.workers, *self.beats]:
            if proc is not None and proc.poll() is None:
                with _suppress():
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.workers, *self.beats]:
            if proc is not None:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    with _suppress():
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
                with _suppress():
                    os.killpg(proc.pid, signal.SIGKILL)  # pool children left behind


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        return isinstance(exc, ProcessLookupError | PermissionError)


def run_chaos(
    *,
    calls: int,
    counters: int = 7,
    workers: int = 3,
    chunk: int = 500,
    batch_rows: int = 300,
    kill_every: float = 10.0,
    redis_restarts: int = 1,
    timeout: float = 600.0,
    log_dir: Path | None = None,
    seed: int = 1,
    say: Callable[[str], None] = lambda _: None,
) -> ChaosReport:
    rng = random.Random(seed)
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="calltrack-chaos-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    report = ChaosReport()
    started = time.monotonic()
    emulator_config = EmulatorConfig(
        step_seconds=0.3,
        seed=seed,
        # Below the workers' own limit of 3, so Metrica's 429 quota_parallel_requests does happen.
        quotas=QuotaConfig(requests_per_ip_per_second=None, parallel_requests_per_login=2),
        faults=(
            FaultRule(
                backend_error_share=0.04,
                drop_before_store_share=0.03,
                drop_after_store_share=0.05,
                latency=(0.0, 0.15),
                kinds=frozenset({"upload"}),
            ),
            FaultRule(backend_error_share=0.03, latency=(0.0, 0.05), kinds=frozenset({"list", "status"})),
        ),
    )
    with (
        RedisServer(data_dir=log_dir / "redis", appendfsync="always") as redis_server,
        start_in_thread(emulator_config) as emulator,
    ):
        namespace = "chaos"
        env = {
            "REDIS_URL": redis_server.url,
            "CALLTRACK_REDIS_URL": redis_server.url,
            "CALLTRACK_NAMESPACE": namespace,
            "CALLTRACK_SHARDS": "3",
            "CALLTRACK_METRICA_BASE_URL": emulator.base_url,
            "CALLTRACK_METRICA_EMULATOR": "true",
            "CALLTRACK_FLUSH_MAX_ROWS": str(batch_rows),
            "CALLTRACK_FLUSH_MAX_AGE": "1",
            "CALLTRACK_DRAIN_INTERVAL": "0.5",
            "CALLTRACK_RECONCILE_INTERVAL": "1",
            "CALLTRACK_RECONCILE_MAX_BACKOFF": "2",
            "CALLTRACK_REDISPATCH_AFTER": "4",
            "CALLTRACK_UPLOAD_LOCK_SECONDS": "15",
            "CALLTRACK_HTTP_CONNECT_TIMEOUT": "2",
            "CALLTRACK_HTTP_READ_TIMEOUT": "4",
            "CALLTRACK_HTTP_WRITE_TIMEOUT": "4",
            "CALLTRACK_UPLOAD_MAX_RETRIES": "50",
            "CALLTRACK_LOG_FORMAT": "json",
            "CALLTRACK_FAILPOINTS": ",".join(f"{k}={v}" for k, v in FAILPOINTS.items()),
        }
        fields: dict[str, Any] = {
            k.removeprefix("CALLTRACK_").lower(): v
            for k, v in env.items()
            if k.startswith("CALLTRACK_") and k != "CALLTRACK_FAILPOINTS"
        }
        settings = Settings(_env_file=None, **fields)
        producer_rt = Runtime(settings)
        fleet = Fleet(env, workers, log_dir)
        try:
            fleet.ensure()
            restart_at = {int(calls * (i + 1) / (redis_restarts + 1)) for i in range(redis_restarts)}
            next_kill = time.monotonic() + kill_every
            sent = 0
            while sent < calls:
                span = range(sent, min(sent + chunk, calls))
                # Webhook-style repeats: some events are delivered twice.
                events = [chaos_event(n, counters) for n in [*span, *(n for n in span if n % 20 == 0)]]
                for kind in UploadKind:
                    _submit(producer_rt, [doc for k, doc in events if k is kind], kind)
                sent = min(sent + chunk, calls)
                if any(sent - chunk < point <= sent for point in restart_at):
                    say(f"restarting Redis (SIGKILL) after {sent} calls")
                    redis_server.restart(hard=True)
                    report.redis_restarts += 1
                if time.monotonic() > next_kill:
                    fleet.kill_one(rng)
                    next_kill = time.monotonic() + kill_every
                fleet.ensure()
            report.accepted = calls
            say(f"{calls} calls accepted; waiting for every batch to be final")
            deadline = time.monotonic() + timeout
            while not _settled(producer_rt):
                if time.monotonic() > deadline:
                    say("timed out; counting what is there")
                    break
                if time.monotonic() > next_kill and rng.random() < 0.5:
                    fleet.kill_one(rng)
                    next_kill = time.monotonic() + kill_every * 2
                fleet.ensure()
                time.sleep(0.5)
        finally:
            fleet.stop()
            producer_rt.close()
        report.worker_kills = fleet.kills
        report.worker_deaths = fleet.deaths
        report.failpoint_kills = sum(
            path.read_text(errors="replace").count("Worker exited prematurely: signal 9")
            for path in log_dir.glob("worker*.log")
        )
        _count(emulator, report, calls)
        stats = emulator.admin.stats()
        report.faults = {k: v for k, v in stats["counts"].items() if k.startswith(("faults.", "status."))}
        report.faults.update({f"quota {k}": v for k, v in stats["quota_rejections"].items()})
    report.seconds = time.monotonic() - started
    return report


def _submit(rt: Runtime, batch: list[dict[str, Any]], kind: UploadKind) -> None:
    """Submit until Redis takes it (it may be restarting); repeats are dropped downstream."""
    for attempt in range(200):
        try:
            result = rt.producer.submit(batch, kind)
            assert not result.rejected, result.rejected[:1]
            return
        except ProducerError:
            time.sleep(min(0.05 * (attempt + 1), 1.0))
    raise RuntimeError("Redis did not come back")


def _settled(rt: Runtime) -> bool:
    """Every stream empty, no open buffer, every batch final."""
    try:
        for shard in range(rt.keys.shards):
            if rt.redis.xlen(rt.keys.stream(shard)) or rt.redis.zcard(rt.keys.due(shard)):
                return False
            if rt.redis.zcard(rt.keys.sealed(shard)) or rt.redis.zcard(rt.keys.uploaded(shard)):
                return False
        return True
    except Exception:
        return False


def _count(emulator: RunningEmulator, report: ChaosReport, calls: int) -> None:
    rows = emulator.admin.rows()
    report.stored_rows = len(rows)
    report.conversions = sum(1 for row in rows if row["kind"] == "conversions")
    seen = Counter(next(row[c] for c in ("ClientId", "Yclid", "PurchaseId") if row.get(c)) for row in rows)
    report.lost = sum(1 for n in range(calls) if str(10**15 + n) not in seen)
    report.duplicated = sum(count - 1 for count in seen.values() if count > 1)
    comments = Counter(u["comment"] for u in emulator.admin.uploads(with_rows=False))
    report.uploads = sum(comments.values())
    report.batches_stored_twice = sum(1 for count in comments.values() if count > 1)
