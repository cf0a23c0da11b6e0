"""An upgrade with work at every stage: the previous release (from this repository's history) takes
calls, then this release takes over and the provider retries every call.

The previous release is the commit in ``tests/upgrade/PREVIOUS_RELEASE`` (tag ``v2026.12.06``, data format 2,
whose ingest stream entries hold one call each: this release groups them and drains both; the
file keeps a clone without tags working), extracted with ``git archive`` into a temporary folder and
run with this checkout's interpreter (its dependencies are a subset of this release's lock) and
``PYTHONPATH`` set to that folder. Its code drives the work into each stage, for real, against the
same Redis and the Metrica emulator over HTTP:

* uploaded, awaiting its status (no reconcile ran): old producer, drain, uploader;
* uploading, its process SIGKILLed while the request is in flight (the ``during_upload_request``
  failpoint; the emulator answers after a delay, so the kill lands inside the request);
* sealed, not uploaded;
* in an open buffer;
* in the stream;
* held (a provider call to a number with no route yet).

Then a worker of this release, started while one of the previous release runs, must refuse to start
(nothing migrated). Once that one stopped, this release's worker and beat start as processes (the
first one migrates the format), the provider retries every call through this release's producer, the
operator routes the held calls' number and replays them, and the emulator must hold every call once.
Last, a rollback: the previous release's worker must refuse to start on the new format.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.settings import Settings
from tests.helpers import make_call, unavailable
from tests.pipeline import running_emulator
from worker.format import CURRENT, stored_version
from worker.intake.routing import Route
from worker.intake.service import build_intake
from worker.model.inbound import InboundCall
from worker.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = (Path(__file__).with_name("PREVIOUS_RELEASE")).read_text().strip()
STAGES = ("uploaded", "killed_mid_upload", "sealed", "open_buffer", "stream")
HELD_NUMBER = "+74951112233"  # no route for it in the previous release: its calls are held
CELERY = str(Path(sys.executable).with_name("celery"))

# The previous release's processes: run by its own code, with this interpreter.
OLD_SCRIPT = r"""
import json, sys
from config.settings import Settings
from worker.runtime import Runtime

action, rest = sys.argv[1], sys.argv[2:]
rt = Runtime(Settings(_env_file=None))
if action == "submit":
    from worker.model.kinds import UploadKind
    result = rt.producer.submit(json.loads(sys.stdin.read()), UploadKind.CALLS)
    assert not result.rejected, result.rejected[:1]
    print(json.dumps({"accepted": len(result.accepted)}))
elif action == "drain":
    from worker.delivery.drain import drain
    print(json.dumps({"sealed": drain(rt, seal_all=rest == ["seal"]).sealed}))
elif action == "hold":
    from worker.intake.service import build_intake
    from worker.model.inbound import InboundCall
    outcomes = build_intake(rt).accept([InboundCall(**call) for call in json.loads(sys.stdin.read())])
    print(json.dumps({"held": sum(1 for outcome in outcomes if outcome.status == "held")}))
elif action == "upload":
    from worker.delivery.uploader import upload_batch
    print(json.dumps([str(upload_batch(rt, batch)) for batch in rest]))
rt.close()
"""


@dataclass
class UpgradeReport:
    calls: int = 0
    per_stage: dict[str, int] = field(default_factory=dict)
    at_takeover: dict[str, int] = field(default_factory=dict)
    held_replayed: int = 0
    held_retries_sent: int = 0
    side_by_side_refused: bool = False
    side_by_side_line: str = ""
    format_while_old_alive: int | None = None
    format_before: int | None = None
    format_after: int | None = None
    killed_mid_upload: bool = False
    stored_rows: int = 0
    lost: int = 0
    doubled: int = 0
    rollback_refused: bool = False
    rollback_line: str = ""
    seconds: float = 0.0

    def table(self) -> str:
        rows = [
            ("calls taken by the previous release", self.calls),
            *((f"  of which left {stage}", n) for stage, n in self.per_stage.items()),
            *((f"at takeover: {place}", n) for place, n in self.at_takeover.items()),
            ("new worker refused next to a live old one", f"{self.side_by_side_refused}: {self.side_by_side_line}"),
            ("format before / after the new release started", f"{self.format_before} / {self.format_after}"),
            ("old uploader SIGKILLed inside its request", self.killed_mid_upload),
            ("held calls replayed after routing their number", self.held_replayed),
            ("held calls' provider retries taken by the producer", self.held_retries_sent),
            ("rows at Metrica after every call was retried", self.stored_rows),
            ("lost", self.lost),
            ("doubled", self.doubled),
            ("rollback refused", f"{self.rollback_refused}: {self.rollback_line}"),
            ("seconds", round(self.seconds, 1)),
        ]
        width = max(len(str(name)) for name, _ in rows)
        return "\n".join(f"{str(name).ljust(width)}  {value}" for name, value in rows)


@contextlib.contextmanager
def previous_release() -> Iterator[Path]:
    """The previous release's tree in a temporary folder (``git archive`` of its commit)."""
    if not (ROOT / ".git").exists():
        unavailable("no git history in this checkout: the upgrade test needs the previous release's commit")
    with tempfile.TemporaryDirectory(prefix="calltrack-previous-") as folder:
        archive = Path(folder) / "release.tar"
        done = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), PREVIOUS],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            unavailable(f"commit {PREVIOUS} (tests/upgrade/PREVIOUS_RELEASE) is not in this clone: {done.stderr}")
        tree = Path(folder) / "tree"
        with tarfile.open(archive) as tar:
            tar.extractall(tree, filter="data")
        yield tree


def _env(base: dict[str, str], tree: Path) -> dict[str, str]:
    return {**os.environ, **base, "PYTHONPATH": str(tree)}


def _old(tree: Path, env: dict[str, str], action: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", OLD_SCRIPT, action, *args], cwd=tree, env=_env(env, tree), input=stdin,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _ok(done: subprocess.CompletedProcess[str]) -> Any:
    if done.returncode != 0:
        raise RuntimeError(f"the previous release failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _where(rt: Runtime) -> dict[str, int]:
    """Where the work is: calls in streams, open buffers, and batches by state."""
    found: Counter[str] = Counter()
    for shard in range(rt.keys.shards):
        found["calls in a stream"] += rt.redis.xlen(rt.keys.stream(shard))
        found["open buffers"] += rt.redis.zcard(rt.keys.due(shard))
    for key in rt.redis.scan_iter(match=f"{rt.keys.namespace}:*:batch:*", count=1000):
        state = str(rt.redis.hget(key, "state") or "?")
        found[f"batches {state}"] += 1
    return dict(sorted(found.items()))


def _settled(rt: Runtime) -> bool:
    for shard in range(rt.keys.shards):
        if rt.redis.xlen(rt.keys.stream(shard)) or rt.redis.zcard(rt.keys.due(shard)):
            return False
        if rt.redis.zcard(rt.keys.sealed(shard)) or rt.redis.zcard(rt.keys.uploaded(shard)):
            return False
    return True


def run_upgrade(
    redis_url: str, namespace: str, log_dir: Path, *, per_stage: int = 40, timeout: float = 90.0,
    say: Callable[[str], None] = lambda _: None,
) -> UpgradeReport:  # fmt: skip
    """One upgrade; raises when a process of either release misbehaves, counts what Metrica holds."""
    started = time.monotonic()
    report = UpgradeReport()
    counters = (1001, 1002, 1003)
    calls = {
        stage: [make_call(counters[n % 3], i * 100_000 + n) for n in range(per_stage)] for i, stage in enumerate(STAGES)
    }
    held_count = max(per_stage // 3, 1)
    start = int(time.time()) - 3600 - held_count  # every held call in the past, one second apart
    held: list[dict[str, Any]] = [
        {"provider": "generic", "call_id": f"held-{n}", "started_at": start + n, "answered": True, "talk": 30,
         "tracking_number": HELD_NUMBER, "caller": f"+7916{n:07d}", "ids": {"ClientId": str(9 * 10**15 + n)}}
        for n in range(held_count)
    ]  # fmt: skip
    base = {
        "CALLTRACK_REDIS_URL": redis_url,
        "CALLTRACK_NAMESPACE": namespace,
        "CALLTRACK_SHARDS": "2",
        "CALLTRACK_METRICA_EMULATOR": "true",
        "CALLTRACK_FLUSH_MAX_ROWS": "10000",
        "CALLTRACK_LOG_FORMAT": "json",
        "CALLTRACK_UPLOAD_LOCK_SECONDS": "7",
        "CALLTRACK_HTTP_CONNECT_TIMEOUT": "1",
        "CALLTRACK_HTTP_WRITE_TIMEOUT": "1",
        "CALLTRACK_HTTP_READ_TIMEOUT": "3",
        "CALLTRACK_COUNTER_JOIN_WAIT": "warn",
        "CALLTRACK_HEARTBEAT_INTERVAL": "1",
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    # Never strict: the previous release posts calls to the unified endpoint (type=CALLS), which the strict
    # emulator refuses as undocumented; this run is about the upgrade, not that release's endpoints.
    with previous_release() as tree, running_emulator(step_seconds=0.2, strict=False) as emulator:
        base["CALLTRACK_METRICA_BASE_URL"] = emulator.base_url
        # The previous release runs no beat: its buffers stay open (for 20 s: still open when this release
        # takes over) and its uploads are never polled; no process of it writes a heartbeat.
        old_env = {**base, "CALLTRACK_FLUSH_MAX_AGE": "20", "CALLTRACK_RECONCILE_FIRST_POLL_SECONDS": "2"}
        for stage in STAGES:
            _ok(_old(tree, old_env, "submit", stdin=json.dumps(calls[stage])))
            if stage == "stream":
                break
            sealed = _ok(_old(tree, old_env, "drain", "seal" if stage != "open_buffer" else "open"))["sealed"]
            if stage == "uploaded":
                _ok(_old(tree, old_env, "upload", *sealed))
            elif stage == "killed_mid_upload":
                emulator.admin.set_faults(latency=2.0, kinds="upload")
                killed = _old(tree, {**old_env, "CALLTRACK_FAILPOINTS": "during_upload_request=1"}, "upload", *sealed)
                emulator.admin.clear_faults()
                report.killed_mid_upload = killed.returncode == -signal.SIGKILL
            say(f"previous release: {per_stage} calls left {stage}")
            report.per_stage[stage] = per_stage
        report.per_stage["stream"] = per_stage
        report.per_stage["held"] = _ok(_old(tree, old_env, "hold", stdin=json.dumps(held)))["held"]
        report.calls = per_stage * len(STAGES) + len(held)
        settings = Settings(_env_file=None, redis_url=redis_url, namespace=namespace, shards=2)
        rt = Runtime(settings)
        try:
            report.format_before = stored_version(rt.redis, rt.keys)
            report.at_takeover = _where(rt)
            new_env = {
                **base, "PYTHONPATH": str(ROOT), "CALLTRACK_FLUSH_MAX_AGE": "1", "CALLTRACK_DRAIN_INTERVAL": "0.5",
                "CALLTRACK_RECONCILE_INTERVAL": "1", "CALLTRACK_RECONCILE_FIRST_POLL_SECONDS": "0",
                "CALLTRACK_REDISPATCH_AFTER": "4", "CALLTRACK_RECONCILE_MAX_BACKOFF": "2",
            }  # fmt: skip
            # Side by side with a live worker of the previous release, this release refuses to start.
            old_worker = _celery(old_env, tree, log_dir / "old-worker-alive.log", "worker", "--pool", "solo")
            try:
                _wait(lambda: bool(rt.redis.hlen(rt.keys.heartbeats)), 60, "the old worker's heartbeat")
                refused = _celery(new_env, ROOT, log_dir / "worker-refused.log", "worker", "--pool", "solo")
                report.side_by_side_refused = refused.wait(60) == 2
                report.side_by_side_line = _line(log_dir / "worker-refused.log")
                report.format_while_old_alive = stored_version(rt.redis, rt.keys)
            finally:
                _stop(old_worker)
            procs = [
                _celery(new_env, ROOT, log_dir / "worker.log", "worker", "--pool", "prefork", "--concurrency", "2",
                        "--without-gossip", "--without-mingle", "--hostname", f"up-{namespace}@%h"),
                _celery(new_env, ROOT, log_dir / "beat.log", "beat"),
            ]  # fmt: skip
            try:
                _wait(lambda: rt.redis.get(rt.keys.format_version) == str(CURRENT), 60, "the new release's migration")
                report.format_after = stored_version(rt.redis, rt.keys)
                say(f"this release started: format {report.format_before} -> {report.format_after}")
                everything = [call for stage in STAGES for call in calls[stage]]
                result = rt.producer.submit(everything)  # the provider retries every call
                assert not result.rejected, result.rejected[:1]
                # The operator routes the held calls' number and replays them; the provider retries them too.
                intake = build_intake(rt)
                intake.routing.add([Route.parse(number=HELD_NUMBER, counter_id=counters[0])])
                replayed = intake.replay(intake.held.entries(count=10_000))
                report.held_replayed = sum(1 for o in replayed.outcomes.values() if o.status == "accepted")
                # Taken by the producer, then dropped as repeats by drain: the count at Metrica says so.
                retried = intake.accept([InboundCall(**call) for call in held])
                report.held_retries_sent = sum(1 for o in retried if o.status == "accepted")
                _wait(lambda: _settled(rt), timeout, "every batch final", lambda: str(_where(rt)))
            finally:
                for proc in procs:
                    _stop(proc)
        finally:
            rt.close()
        rows = emulator.admin.rows()
        report.stored_rows = len(rows)
        seen = Counter(str(row.get("ClientId")) for row in rows)
        sent = {str(call["ClientId"]) for stage in STAGES for call in calls[stage]}
        sent |= {call["ids"]["ClientId"] for call in held}
        report.lost = len(sent - set(seen))
        report.doubled = sum(n - 1 for n in seen.values() if n > 1)
        # The rollback: the previous release's worker on the new format.
        old_worker = _celery(old_env, tree, log_dir / "old-worker.log", "worker", "--pool", "solo")
        try:
            code = old_worker.wait(60)
        except subprocess.TimeoutExpired:
            code = None
        _stop(old_worker)
        report.rollback_line = _line(log_dir / "old-worker.log")
        report.rollback_refused = code == 2 and f"holds data format {CURRENT} but" in report.rollback_line
    report.seconds = time.monotonic() - started
    return report


def _line(log: Path) -> str:
    """The one line a refusing process wrote (``calltrack: ...``)."""
    lines = log.read_text(errors="replace").strip().splitlines()
    return next((line for line in lines if line.startswith("calltrack:")), "")


def _celery(env: dict[str, str], cwd: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [CELERY, "-A", "worker.main", *args, "--loglevel", "INFO"], cwd=cwd, env=_env(env, cwd), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # pool children left behind
    proc.wait(5)


def _wait(predicate: Callable[[], bool], timeout: float, what: str, state: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}: {state()}")
        time.sleep(0.3)
