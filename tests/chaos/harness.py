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

import contextlib
import os
import random
import secrets
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
from typing import Any, cast

from config.settings import Settings
from emulator.config import EmulatorConfig, QuotaConfig
from emulator.faults import FaultRule
from emulator.server import RunningEmulator, start_in_thread
from standalone.redis_server import RedisServer
from tests.chaos.redis_faults import (
    RESTORES,
    SCENARIOS,
    confirm_restores,
    cut_aof_tail,
    forgotten_uploads,
    last_incr_file,
    restore_snapshot,
    take_snapshot,
    wait_fsync,
)
from worker.delivery import restore_hold
from worker.delivery.replay import QuarantineError, replay
from worker.errors import ProducerError
from worker.model.kinds import UploadKind
from worker.runtime import Runtime
from worker.store import memory

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
    scenario: str = "kills"
    window: int = 0  # calls accepted in the window Redis then lost (the cut second, after the backup)
    lost_in_window: int = 0
    adopted_from_other: int = 0  # batches recorded on an upload whose comment is another batch's id
    producer_refusals: int = 0  # submits refused at the memory watermark (ingestion: 503)
    missing_replayed: int = 0  # batches quarantined missing_at_metrica and replayed
    quarantined: int = 0  # batches left in quarantine at the end (their rows are not at Metrica)
    aof_bytes_cut: int = 0  # (a): bytes cut from the AOF's tail
    backup_settled: bool | None = None  # (b): whether the pipeline had settled when the backup was taken
    forgotten_uploads: int = 0  # (b): uploads at Metrica the restored Redis had no record of
    forgotten_rows: int = 0  # (b): their rows: what confirming a hold may double (unsettled backup)
    restore_held_shards: int = 0  # (b): shards held after the restore was detected
    doubled_while_held: int = 0  # (b): calls twice at Metrica before the operator confirmed

    def table(self) -> str:
        rows: list[tuple[str, object]] = [
            ("events accepted (calls and conversions)", self.accepted),
            ("rows stored at Metrica", self.stored_rows),
            ("of which offline conversions", self.conversions),
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("batches stored twice", self.batches_stored_twice),
            ("batches adopted from another batch's upload", self.adopted_from_other),
            ("bytes cut from the AOF tail", self.aof_bytes_cut),
            ("pipeline settled before the backup", "-" if self.backup_settled is None else self.backup_settled),
            ("uploads the restore forgot (their rows)", f"{self.forgotten_uploads} ({self.forgotten_rows})"),
            ("shards held after the restore was detected", self.restore_held_shards),
            ("calls doubled while held (before the operator confirmed)", self.doubled_while_held),
            ("calls accepted in the window Redis lost", self.window),
            ("of which lost (counted, not retried)", self.lost_in_window),
            ("producer submits refused at the memory watermark", self.producer_refusals),
            ("batches forgotten by Metrica, quarantined and replayed", self.missing_replayed),
            ("batches left in quarantine", self.quarantined),
            ("uploads", self.uploads),
            ("worker processes killed by the harness", self.worker_kills),
            ("worker processes restarted after dying", self.worker_deaths),
            ("pool processes killed at failpoints", self.failpoint_kills),
            (f"Redis restarts (SIGKILL; scenario {self.scenario})", self.redis_restarts),
            *sorted((f"emulator {k}", v) for k, v in self.faults.items()),
            ("seconds", round(self.seconds, 1)),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)

    def unproven(self) -> list[str]:
        """Why this run proves less than it claims (empty when nothing is missing): each kind of kill
        landed, (a) cut bytes, (b) backed up a settled pipeline."""
        why = []
        if self.worker_kills == 0:
            why.append("no harness kill landed on a running worker")
        if self.failpoint_kills == 0:
            why.append("no failpoint fired: no worker died inside a step")
        if self.scenario == "aof_tail" and self.aof_bytes_cut == 0:
            why.append("no bytes were cut from the AOF")
        if self.scenario == "snapshot" and not self.backup_settled:
            why.append("the pipeline had not settled when the backup was taken")
        if self.scenario == "snapshot_unsettled" and self.backup_settled is not False:
            why.append("the pipeline had settled when the backup was taken")
        if self.scenario in RESTORES and (self.forgotten_uploads == 0 or self.restore_held_shards == 0):
            why.append("the restore forgot no upload, or no shard was held: the detection was not tried")
        return why

    @property
    def exact(self) -> bool:
        """No call twice, no batch on another's upload, every call Redis still held delivered once."""
        # A restore of an unsettled backup may double, once confirmed, the rows of the forgotten
        # uploads (the README's promise), never anything while held.
        allowed = self.forgotten_rows if self.scenario == "snapshot_unsettled" else 0
        return (
            self.lost == self.lost_in_window
            and self.duplicated <= allowed
            and self.doubled_while_held == 0
            and self.batches_stored_twice == 0
            and self.adopted_from_other == 0
        )


def chaos_event(n: int, counters: int, pad: int = 0) -> tuple[UploadKind, dict[str, Any]]:
    """Event ``n``: every fifth an offline conversion, the rest calls; its identifier is unique to n.
    ``pad``: a landing URL of about that many characters on calls (bigger rows, for scenario (c))."""
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
        **({"URL": f"https://shop.example/landing/{n}?" + "q" * pad} if pad else {}),
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

    def kill_one(self, rng: random.Random) -> bool:
        """SIGKILL a running worker's process group; counted only when the kill landed: the main
        process was still running and died of this signal (not of its own exit before it)."""
        alive = [p for p in self.workers if p is not None and p.poll() is None]
        if not alive:
            return False
        victim = rng.choice(alive)
        try:
            os.killpg(victim.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            victim.wait(10)
            return False
        landed = victim.wait(10) == -signal.SIGKILL
        self.kills += landed
        return landed

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
    scenario: str = "kills",
    broker_url: str | None = None,
    cluster: bool = False,
    durability: str = "none",
    say: Callable[[str], None] = lambda _: None,
) -> ChaosReport:
    """One chaos run; ``scenario`` adds what Redis or Metrica does (tests/chaos/redis_faults.py)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    rng = random.Random(seed)
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="calltrack-chaos-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    report = ChaosReport(scenario=scenario)
    started = time.monotonic()
    upload_faults = FaultRule(
        backend_error_share=0.04,
        drop_before_store_share=0.03,
        drop_after_store_share=0.05,
        latency=(0.0, 0.15),
        kinds=frozenset({"upload"}),
        forget_share=0.25 if scenario == "forget" else 0.0,
    )
    emulator_config = EmulatorConfig(
        step_seconds=0.3,
        seed=seed,
        # Below the workers' own limit of 3, so Metrica's 429 quota_parallel_requests does happen.
        quotas=QuotaConfig(requests_per_ip_per_second=None, parallel_requests_per_login=2),
        faults=(
            upload_faults,
            FaultRule(backend_error_share=0.03, latency=(0.0, 0.05), kinds=frozenset({"list", "status"})),
        ),
    )
    appendfsync = "always" if scenario == "kills" else "everysec"
    data_store: Any = (  # RedisServer, or FailoverCluster (kills scenario only: no AOF or snapshot tricks)
        FailoverCluster(log_dir / "cluster", say)
        if cluster
        else RedisServer(data_dir=log_dir / "redis", appendfsync=appendfsync)
    )
    with (
        data_store as redis_server,
        RedisServer(data_dir=log_dir / "beat-redis") as beat_redis,
        start_in_thread(emulator_config) as emulator,
    ):
        # On a shared RabbitMQ the queues carry the namespace: one of this run's own.
        namespace = "chaos" if broker_url is None else f"chaos{secrets.token_hex(4)}"
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
            "CALLTRACK_RECONCILE_FIRST_POLL_SECONDS": "0",
            "CALLTRACK_RECONCILE_MISSING_LIMIT": "2",
            # Polls and lookups only spend their own share of a login's day (the reserve): at one
            # reconcile a second a long run needs more than the default 500.
            "CALLTRACK_QUOTA_POLLING_RESERVE": "2500",
            # A new counter's data goes at once (not a day after its option is switched on: issue 24).
            "CALLTRACK_COUNTER_JOIN_WAIT": "warn",
            "CALLTRACK_REDISPATCH_AFTER": "4",
            "CALLTRACK_UPLOAD_LOCK_SECONDS": "15",
            "CALLTRACK_HTTP_CONNECT_TIMEOUT": "2",
            "CALLTRACK_HTTP_READ_TIMEOUT": "4",
            "CALLTRACK_HTTP_WRITE_TIMEOUT": "4",
            "CALLTRACK_UPLOAD_MAX_RETRIES": "50",
            "CALLTRACK_LOG_FORMAT": "json",
            "CALLTRACK_FAILPOINTS": ",".join(f"{k}={v}" for k, v in FAILPOINTS.items()),
        }
        if broker_url is not None:
            env["CALLTRACK_BROKER_URL"] = broker_url
        if cluster:
            # The data plane on 3 masters + 3 replicas; Celery's broker and redbeat on a single Redis.
            env |= {
                "CALLTRACK_REDIS_CLUSTER": "true",
                "CALLTRACK_SHARDS": "12",
                "CALLTRACK_BEAT_REDIS_URL": beat_redis.url,
            }
            env.setdefault("CALLTRACK_BROKER_URL", beat_redis.url)
        if durability != "none":
            env["CALLTRACK_PRODUCER_DURABILITY"] = durability
        if scenario == "maxmemory":
            # Rows of final batches expire at once, so memory frees as the pipeline drains.
            # A low watermark: a small Redis still leaves megabytes between it and maxmemory for
            # Celery and the workers' connections (a worker cannot even start above maxmemory:
            # kombu's start-up writes are refused).
            env |= {
                "CALLTRACK_ROWS_RETENTION_SECONDS": "2",
                "CALLTRACK_MEMORY_CHECK_SECONDS": "0.2",
                "CALLTRACK_PRODUCER_MEMORY_WATERMARK": "0.4",
            }
        fields: dict[str, Any] = {
            k.removeprefix("CALLTRACK_").lower(): v
            for k, v in env.items()
            if k.startswith("CALLTRACK_") and k != "CALLTRACK_FAILPOINTS"
        }
        settings = Settings(_env_file=None, **fields)
        producer_rt = Runtime(settings)
        fleet = Fleet(env, workers, log_dir)
        restarts = redis_restarts if scenario == "kills" else 0
        known_at_backup: set[str] = set()  # (b) unsettled: the batch ids Redis held at the backup
        window: set[int] = set()
        accepted: set[int] = set()  # event numbers the producers said Redis holds
        tail: list[tuple[int, range]] = []  # (a): the AOF's size after each chunk written while held
        try:
            fleet.ensure()
            restart_at = {int(calls * (i + 1) / (restarts + 1)) for i in range(restarts)}
            next_kill = time.monotonic() + kill_every
            sent = 0
            events_at = _Events(scenario, calls, chunk)
            snapshot_dir = log_dir / "redis-backup"
            window_from = -1
            since_bytes = used_before = 0
            while sent < calls:
                if events_at.due("stop_workers", sent):
                    fleet.stop()
                    say(f"(a) workers stopped; Redis's AOF fsynced at {sent} calls; the next calls go to the tail")
                    wait_fsync()
                    since_bytes = last_incr_file(redis_server).stat().st_size
                    window_from = sent
                if events_at.due("pause_uploads", sent):
                    # Metrica answers 429 to every upload for a while: nothing is uploaded, Redis fills.
                    emulator.admin.clear_faults()
                    emulator.admin.script(
                        [{"status": 429, "error_type": "quota_requests_by_ip"}] * 50_000, kind="upload"
                    )
                    used_before = memory(producer_rt.redis).used
                    say(f"(c) Metrica refuses uploads (429) from {sent} calls on: a backlog builds up in Redis")
                if events_at.due("snapshot", sent):
                    if scenario == "snapshot":
                        report.backup_settled = _wait_settled(producer_rt, fleet, timeout)
                        settled = "settled" if report.backup_settled else "NOT settled (timed out waiting)"
                    else:  # with work in flight, on purpose
                        report.backup_settled = _settled(producer_rt)
                        known_at_backup = _batch_ids(producer_rt)
                        settled = "settled by chance" if report.backup_settled else "not settled (not waited for)"
                    say(f"(b) pipeline {settled} at {sent} calls; taking a backup of Redis")
                    take_snapshot(redis_server, producer_rt.redis, snapshot_dir)
                    window_from = sent
                if events_at.due("maxmemory", sent):
                    # Redis is full: the watermark is below what it holds now, by less than what the
                    # pipeline frees when it has uploaded the backlog (its dedup marks stay for the
                    # dedup window). Tuned for the short form's large rows; with small rows the marks
                    # alone can keep Redis above this watermark (then no run can resume). A quarter of
                    # the growth: since format 3 the streams hold a backlog in fewer bytes (one entry per
                    # bucket and chunk), so half of it reached below what Redis keeps once drained.
                    used = memory(producer_rt.redis).used
                    backlog = max(used - used_before, 1)
                    limit = int((used - backlog * 0.25) / settings.producer_memory_watermark)
                    producer_rt.redis.config_set("maxmemory", limit)
                    say(f"(c) maxmemory set to {limit} bytes ({used} used, backlog {backlog}): producers refused")
                    time.sleep(settings.memory_check_seconds * 2)  # past the producer's cached reading
                    emulator.admin.clear_faults()
                    say("(c) Metrica takes uploads again: the pipeline drains and frees memory")
                span = range(sent, min(sent + chunk, calls))
                # Webhook-style repeats: some events are delivered twice.
                pad = 1900 if scenario == "maxmemory" and calls < 20_000 else 0
                events = [chaos_event(n, counters, pad) for n in [*span, *(n for n in span if n % 20 == 0)]]
                for kind in UploadKind:
                    docs = [doc for k, doc in events if k is kind]
                    report.producer_refusals += _submit(producer_rt, docs, kind, accepted)
                sent = min(sent + chunk, calls)
                if events_at.holding():  # (a): where this chunk ends in the AOF, once written
                    wait_fsync()
                    tail.append((last_incr_file(redis_server).stat().st_size, span))
                if any(sent - chunk < point <= sent for point in restart_at):
                    say(f"restarting Redis (SIGKILL) after {sent} calls")
                    if cluster:  # what the replica may not have yet: the calls of the last chunk
                        window.update(range(max(sent - chunk, 0), sent))
                    redis_server.restart(hard=True)
                    report.redis_restarts += 1
                if events_at.due("cut_tail", sent):
                    # Cut in the middle of the last chunk: every earlier chunk is kept whole and must
                    # arrive; only the chunks ending past the cut are excused.
                    before = tail[-2][0] if len(tail) > 1 else since_bytes
                    keep = before + (tail[-1][0] - before) // 2
                    report.aof_bytes_cut = cut_aof_tail(redis_server, keep)
                    cut_spans = [span for end, span in tail if end > keep]
                    for span in cut_spans:
                        window.update(span)
                    report.redis_restarts += 1
                    say(
                        f"(a) Redis SIGKILLed, {report.aof_bytes_cut} bytes cut from its AOF tail: calls "
                        f"{cut_spans[0].start}..{cut_spans[-1].stop - 1} may be lost, {window_from}.."
                        f"{cut_spans[0].start - 1} were kept"
                    )
                if events_at.due("restore", sent):
                    # Let the pipeline seal and upload some of the window first: after the restore its
                    # batch sequence goes back, and the next batches must not reuse those ids.
                    _wait_settled(producer_rt, fleet, 8.0)
                    if scenario == "snapshot_unsettled":  # a batch sealed after the backup is at Metrica
                        _wait_for_upload_outside(emulator, known_at_backup, fleet, timeout)
                    restore_snapshot(redis_server, snapshot_dir)
                    window.update(range(window_from, sent))
                    report.redis_restarts += 1
                    report.forgotten_uploads, report.forgotten_rows = forgotten_uploads(
                        producer_rt, emulator.admin.uploads(with_rows=False)
                    )
                    say(f"(b) the restore forgot {report.forgotten_uploads} uploads ({report.forgotten_rows} rows)")
                    say(f"(b) Redis restored from the backup: calls {window_from}..{sent - 1} may be lost")
                if not events_at.holding():  # (a): the workers stay stopped while the tail is written
                    # Timed kills, and one for sure a third of the way in: a short run on a fast
                    # machine may otherwise finish before the first timer fires and prove nothing.
                    first_due = kill_every > 0 and fleet.kills == 0 and sent >= calls // 3
                    if time.monotonic() > next_kill or first_due:
                        fleet.kill_one(rng)
                        next_kill = time.monotonic() + kill_every
                    fleet.ensure()
            report.accepted = len(accepted)
            say(f"{report.accepted} events accepted; waiting for every batch to be final")
            fleet.ensure()
            if scenario in RESTORES:  # held shards never settle: the rest first, then the operator
                _wait_settled(producer_rt, fleet, timeout, rng=rng, kill_every=kill_every, say=say, held_ok=True)
                report.doubled_while_held = _doubled(emulator)
                held = confirm_restores(producer_rt)
                report.restore_held_shards = len(held)
                say(f"(b) shards {held} were held ({report.doubled_while_held} calls doubled meanwhile); confirmed")
            _wait_settled(producer_rt, fleet, timeout, rng=rng, kill_every=kill_every, say=say)
            if scenario == "forget":
                report.missing_replayed = _replay_missing(producer_rt, fleet, timeout, say)
        finally:
            fleet.stop()
            if broker_url is not None:
                _delete_queues(broker_url, namespace)
        report.worker_kills = fleet.kills
        report.worker_deaths = fleet.deaths
        report.failpoint_kills = sum(
            path.read_text(errors="replace").count("Worker exited prematurely: signal 9")
            for path in log_dir.glob("worker*.log")
        )
        _count(emulator, report, accepted, window)
        report.adopted_from_other = _adopted_from_other(producer_rt, emulator)
        report.quarantined = _quarantined(producer_rt, say)
        producer_rt.close()
        stats = emulator.admin.stats()
        report.faults = {k: v for k, v in stats["counts"].items() if k.startswith(("faults.", "status."))}
        report.faults.update({f"quota {k}": v for k, v in stats["quota_rejections"].items()})
    report.seconds = time.monotonic() - started
    return report


class FailoverCluster:
    """A local 3-master cluster whose ``restart`` SIGKILLs one master, waits until its replica took over,
    then starts the killed node again (it rejoins as a replica)."""

    def __init__(self, base_dir: Path, say: Callable[[str], None]) -> None:
        from standalone.cluster import LocalCluster

        self.cluster = LocalCluster(base_dir=base_dir)
        self.say = say
        self.rng = random.Random()

    @property
    def url(self) -> str:
        return self.cluster.url

    def restart(self, *, hard: bool = True) -> None:
        victim = self.rng.choice(self.cluster.masters())
        victim.kill()
        self.say(f"master on port {victim.port} SIGKILLed; waiting for its replica to take over")
        self.cluster.wait_healthy(60, skip={victim.port})
        victim.start()
        self.cluster.wait_healthy(60)
        self.cluster.wait_replicas_online(60)
        self.say(f"failover done; port {victim.port} is back as a replica")

    def __enter__(self) -> FailoverCluster:
        self.cluster.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cluster.__exit__(*exc)


def _delete_queues(broker_url: str, namespace: str) -> None:
    from kombu import Connection

    with Connection(broker_url, connect_timeout=3) as conn:
        for name in ("calltrack.periodic", "calltrack.upload"):
            channel: Any = conn.channel()
            with contextlib.suppress(Exception):
                channel.queue_delete(f"{namespace}.{name}")


class _Events:
    """When each scenario's Redis event happens, by calls sent so far; each fires once."""

    def __init__(self, scenario: str, calls: int, chunk: int) -> None:
        points = {
            "aof_tail": {"stop_workers": calls // 2, "cut_tail": calls // 2 + 2 * chunk},
            "snapshot": {"snapshot": calls // 3, "restore": 2 * calls // 3},
            "snapshot_unsettled": {"snapshot": calls // 3, "restore": 2 * calls // 3},
            "maxmemory": {"pause_uploads": calls // 4, "maxmemory": 3 * calls // 4},
        }.get(scenario, {})
        self._points = dict(points)
        self._fired: set[str] = set()

    def due(self, name: str, sent: int) -> bool:
        point = self._points.get(name)
        if point is None or name in self._fired or sent < point:
            return False
        self._fired.add(name)
        return True

    def holding(self) -> bool:
        """Between (a)'s stop of the workers and the cut of the AOF tail."""
        return "stop_workers" in self._fired and "cut_tail" not in self._fired


def _wait_settled(
    rt: Runtime,
    fleet: Fleet,
    timeout: float,
    *,
    rng: random.Random | None = None,
    kill_every: float = 0.0,
    say: Callable[[str], None] = lambda _: None,
    held_ok: bool = False,
) -> bool:
    """Wait until :func:`_settled` (True), or ``timeout`` seconds (False); ``held_ok``: shards held
    after a restore count as settled."""
    deadline = time.monotonic() + timeout
    next_kill = time.monotonic() + kill_every * 2
    while not _settled(rt, held_ok=held_ok):
        if time.monotonic() > deadline:
            say("timed out; counting what is there")
            return False
        if rng is not None and time.monotonic() > next_kill and rng.random() < 0.5:
            fleet.kill_one(rng)
            next_kill = time.monotonic() + kill_every * 2
        fleet.ensure()
        time.sleep(0.5)
    return True


def _batch_ids(rt: Runtime) -> set[str]:
    return {str(k).rsplit(":", 1)[-1] for k in rt.redis.scan_iter(match=f"{rt.keys.namespace}:*:batch:*", count=1000)}


def _wait_for_upload_outside(emulator: RunningEmulator, known: set[str], fleet: Fleet, timeout: float) -> None:
    """Until Metrica holds an upload of a batch sealed after the backup: one the restore will forget."""
    deadline = time.monotonic() + timeout
    while not any(str(u["comment"]) not in known for u in emulator.admin.uploads(with_rows=False)):
        if time.monotonic() > deadline:
            return  # unproven() says so: the restore forgot no upload
        fleet.ensure()
        time.sleep(0.5)


def _replay_missing(rt: Runtime, fleet: Fleet, timeout: float, say: Callable[[str], None]) -> int:
    """(d) The operator's part: replay the batches quarantined as missing_at_metrica until none is left."""
    replayed = 0
    for _ in range(10):
        missing = []
        for shard in range(rt.keys.shards):
            for batch_id in cast(list[str], rt.redis.zrange(rt.keys.quarantine(shard), 0, -1)):
                reason = str(rt.redis.hget(rt.keys.batch(batch_id), "reason") or "")
                if reason.startswith("missing_at_metrica"):
                    missing.append(batch_id)
        if not missing:
            break
        done = 0
        for batch_id in missing:
            try:
                replay(rt, batch_id, who="chaos")
                done += 1
            except QuarantineError as error:  # Metrica failed the lookup (503, quota): try again
                say(f"(d) replay of {batch_id} not done yet: {error}")
        replayed += done
        say(f"(d) {done} batches Metrica forgot replayed (looked up by comment, then re-sent)")
        _wait_settled(rt, fleet, timeout)
    return replayed


def _adopted_from_other(rt: Runtime, emulator: RunningEmulator) -> int:
    """Batches whose recorded upload carries another batch's id as its comment."""
    comments = {int(u["id"]): str(u["comment"]) for u in emulator.admin.uploads(with_rows=False)}
    wrong = 0
    for key in rt.redis.scan_iter(match=f"{rt.keys.namespace}:*:batch:*", count=1000):
        upload_id = rt.redis.hget(key, "upload_id")
        batch_id = str(key).rsplit(":", 1)[-1]
        if upload_id and int(upload_id) in comments and comments[int(upload_id)] != batch_id:
            wrong += 1
    return wrong


def _submit(rt: Runtime, batch: list[dict[str, Any]], kind: UploadKind, accepted: set[int]) -> int:
    """Submit until Redis takes it (it may be restarting, or full); repeats are dropped downstream.
    Adds the numbers of the events the producer reported accepted to ``accepted``. Returns how many
    times it was refused at the memory watermark (ingestion's 503)."""
    refusals = 0
    for attempt in range(400):
        try:
            result = rt.producer.submit(batch, kind)
            assert not result.rejected, result.rejected[:1]
            accepted.update(_number(batch[taken.index]) for taken in result.accepted)
            return refusals
        except ProducerError as error:
            refusals += "watermark" in str(error)
            time.sleep(min(0.05 * (attempt + 1), 1.0))
    raise RuntimeError("Redis did not come back")


def _settled(rt: Runtime, *, held_ok: bool = False) -> bool:
    """Every stream empty, no open buffer, every batch final (``held_ok``: but in held shards)."""
    try:
        held = set(restore_hold.held_shards(rt)) if held_ok else set()
        for shard in set(range(rt.keys.shards)) - held:
            if rt.redis.xlen(rt.keys.stream(shard)) or rt.redis.zcard(rt.keys.due(shard)):
                return False
            if rt.redis.zcard(rt.keys.sealed(shard)) or rt.redis.zcard(rt.keys.uploaded(shard)):
                return False
        return True
    except Exception:
        return False


def _quarantined(rt: Runtime, say: Callable[[str], None]) -> int:
    """The batches left in quarantine, each said with its reason (a lost call's likely story)."""
    left = 0
    for shard in range(rt.keys.shards):
        for batch_id in cast(list[str], rt.redis.zrange(rt.keys.quarantine(shard), 0, -1)):
            left += 1
            reason = cast(str | None, rt.redis.hget(rt.keys.batch(batch_id), "reason"))
            say(f"quarantined {batch_id}: {reason}")
    return left


def _number(event: dict[str, Any]) -> int:
    """The event number ``n`` of :func:`chaos_event` (or of a row at the emulator), from its identifier."""
    return int(next(event[c] for c in ("ClientId", "Yclid", "PurchaseId") if event.get(c))) - 10**15


def _doubled(emulator: RunningEmulator, seen: Counter[str] | None = None) -> int:
    """Rows beyond the first of each event at Metrica."""
    if seen is None:
        seen = Counter(str(10**15 + _number(row)) for row in emulator.admin.rows())
    return sum(count - 1 for count in seen.values() if count > 1)


def _count(emulator: RunningEmulator, report: ChaosReport, accepted: set[int], window: set[int]) -> None:
    rows = emulator.admin.rows()
    report.stored_rows = len(rows)
    report.conversions = sum(1 for row in rows if row["kind"] == "conversions")
    seen = Counter(str(10**15 + _number(row)) for row in rows)
    lost = [n for n in sorted(accepted) if str(10**15 + n) not in seen]
    report.lost = len(lost)
    report.window = len(window)
    report.lost_in_window = sum(1 for n in lost if n in window)
    report.duplicated = _doubled(emulator, seen)
    comments = Counter(u["comment"] for u in emulator.admin.uploads(with_rows=False))
    report.uploads = sum(comments.values())
    report.batches_stored_twice = sum(1 for count in comments.values() if count > 1)
