"""Several real worker processes against one Redis: quotas hold fleet-wide, one beat runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from config.settings import Settings
from emulator.config import EmulatorConfig, QuotaConfig
from emulator.faults import FaultRule
from emulator.server import start_in_thread
from standalone.redis_server import RedisServer
from tests.chaos.harness import Fleet
from tests.helpers import make_call, wait_for
from worker.app import create_app
from worker.beat import CalltrackBeatScheduler
from worker.ops.health import Heartbeat, liveness
from worker.runtime import Runtime


def fleet_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        "REDIS_URL": settings.redis_url,
        "CALLTRACK_NAMESPACE": settings.namespace,
        "CALLTRACK_SHARDS": str(settings.shards),
        "CALLTRACK_FLUSH_MAX_AGE": "0.5",
        "CALLTRACK_DRAIN_INTERVAL": "0.3",
        "CALLTRACK_RECONCILE_INTERVAL": "0.5",
        "CALLTRACK_LOG_FORMAT": "json",
        "CALLTRACK_METRICA_EMULATOR": "true",
    }
    env.update(extra)
    return env


def test_three_worker_processes_keep_to_metricas_quotas_together(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    config = EmulatorConfig(
        step_seconds=0.2,
        # Metrica's real limits, and latency so that requests overlap.
        quotas=QuotaConfig(requests_per_ip_per_second=30, parallel_requests_per_login=3),
        faults=(FaultRule(latency=(0.05, 0.25)),),
    )
    with start_in_thread(config) as emulator:
        settings = make_settings(metrica_base_url=emulator.base_url, flush_max_rows=10, shards=3)
        env = fleet_env(
            settings,
            CALLTRACK_METRICA_BASE_URL=emulator.base_url,
            CALLTRACK_FLUSH_MAX_ROWS="10",
            CALLTRACK_QUOTA_REQUESTS_PER_SECOND="30",
            # Uploads alone saturate the rate here; counter setup (tested on its own) stays out of it.
            CALLTRACK_COUNTER_SETUP="off",
        )
        fleet = Fleet(env, workers=3, log_dir=tmp_path, concurrency=3)
        try:
            fleet.ensure()
            rt = Runtime(settings)
            rt.producer.submit([make_call(counter, n) for counter in range(2000, 2030) for n in range(40)])
            wait_for(lambda: emulator.admin.stats()["rows"] == 1200, timeout=180, interval=0.5, what="1,200 rows")
            wait_for(
                lambda: set(emulator.admin.stats()["upload_statuses"]) == {"PROCESSED"},
                timeout=60,
                what="every upload PROCESSED",
            )
            rt.close()
        finally:
            fleet.stop()
        stats = emulator.admin.stats()
    assert stats["uploads"] == 120
    # Nine concurrent task slots on one login, yet Metrica never had to refuse a request.
    assert stats["quota_rejections"] == {}
    logs = "".join(p.read_text() for p in tmp_path.glob("worker*.log"))
    assert "quota 'parallel' has no room" in logs  # the shared permits did hold requests back


def test_one_beat_sends_and_a_standby_takes_over(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    # DEBUG: a drain every 0.5 s logs its "Sending due task" line at debug (config/logging.py).
    env = fleet_env(
        settings, CALLTRACK_BEAT_LOCK_SECONDS="3", CALLTRACK_DRAIN_INTERVAL="0.5", CALLTRACK_LOG_LEVEL="DEBUG"
    )
    fleet = Fleet(env, workers=0, log_dir=tmp_path, beats=2)
    try:
        fleet.ensure()

        def sent(i: int) -> int:
            return (tmp_path / f"beat{i}.log").read_text().count("Sending due task")

        # Counted once a beat has sent many due tasks (not after a fixed sleep): by then the other
        # one has had as long to send, and a second sender would show.
        wait_for(lambda: max(sent(0), sent(1)) >= 12, timeout=120, what="a beat to send a dozen tasks")
        active = [i for i in range(2) if sent(i)]
        assert len(active) == 1, "exactly one beat may send"
        (leader,) = active
        proc = fleet.beats[leader]
        assert proc is not None
        proc.kill()
        proc.wait(10)
        fleet.beats[leader] = proc  # keep it dead: no restart
        standby = 1 - leader
        wait_for(
            lambda: sent(standby) > 0,
            timeout=30,
            what="the standby beat to take over",
        )
    finally:
        fleet.stop()


def test_beat_survives_redis_forgetting_its_lock(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """Issue 13, defect 9: a restore from a snapshot (or a failover) drops redbeat's lock."""
    settings = make_settings()
    # DEBUG: a drain every 0.5 s logs its "Sending due task" line at debug (config/logging.py).
    env = fleet_env(
        settings, CALLTRACK_BEAT_LOCK_SECONDS="3", CALLTRACK_DRAIN_INTERVAL="0.5", CALLTRACK_LOG_LEVEL="DEBUG"
    )
    fleet = Fleet(env, workers=0, log_dir=tmp_path, beats=1)
    rt = Runtime(settings)
    log = tmp_path / "beat0.log"

    def locks() -> list[str]:
        return [k for k in rt.redis.scan_iter(match=f"{rt.keys.redbeat_prefix}*lock*") if "lock" in k]

    try:
        fleet.ensure()
        (lock,) = wait_for(locks, timeout=30, what="the beat's lock")
        wait_for(lambda: "Sending due task" in log.read_text(), timeout=30, what="the beat to send")
        rt.redis.delete(lock)  # Redis forgets it
        sent_before = log.read_text().count("Sending due task")
        wait_for(lambda: "beat_lock_lost" in log.read_text(), timeout=60, what="the beat to notice")
        proc = fleet.beats[0]
        assert proc is not None and proc.poll() is None, "the beat exited when its lock vanished"
        assert wait_for(lambda: rt.redis.exists(lock), timeout=10, what="the lock taken again")
        wait_for(
            lambda: log.read_text().count("Sending due task") > sent_before + 2,
            timeout=30,
            what="periodic tasks to go on",
        )
    finally:
        fleet.stop()
        rt.close()


def test_beat_recreates_its_schedule_when_redis_forgets_it(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Issue 23, item 5: redbeat's keys deleted (a restore, an operator) -> the beat stores its static
    schedule again and drains resume; its liveness stays green because it sends again."""
    with start_in_thread(EmulatorConfig(step_seconds=0.1, quotas=QuotaConfig(requests_per_ip_per_second=None))) as emu:
        settings = make_settings(metrica_base_url=emu.base_url, heartbeat_dir=str(tmp_path), heartbeat_interval=0.5)
        env = fleet_env(
            settings,
            CALLTRACK_METRICA_BASE_URL=emu.base_url,
            CALLTRACK_BEAT_LOCK_SECONDS="3",
            CALLTRACK_HEARTBEAT_DIR=str(tmp_path),
            CALLTRACK_HEARTBEAT_INTERVAL="0.5",
            CALLTRACK_COUNTER_SETUP="off",
        )
        fleet = Fleet(env, workers=1, log_dir=tmp_path, beats=1)
        rt = Runtime(settings)
        try:
            fleet.ensure()
            rt.producer.submit([make_call(3100, n) for n in range(5)])
            wait_for(lambda: emu.admin.stats()["rows"] == 5, timeout=120, what="the first calls at Metrica")
            redbeat = list(rt.redis.scan_iter(match=f"{rt.keys.redbeat_prefix}*"))
            assert any(key.endswith(":schedule") for key in redbeat), redbeat
            rt.redis.delete(*redbeat)  # the schedule, every entry, the statics set and the lock
            rt.producer.submit([make_call(3100, n) for n in range(5, 10)])
            wait_for(lambda: emu.admin.stats()["rows"] == 10, timeout=120, what="drains after the schedule came back")
            assert "beat_schedule_restored" in (tmp_path / "beat0.log").read_text()
            assert rt.redis.zcard(f"{rt.keys.redbeat_prefix}:schedule") == len(create_app(settings).conf.beat_schedule)
            beat = fleet.beats[0]
            assert beat is not None and beat.poll() is None
            ok, why = liveness(settings, "beat")
            assert ok, why
            assert any(str(field).startswith("beat:") for field in rt.redis.hkeys(rt.keys.heartbeats))
            fleet.stop()
            # A clean stop (SIGTERM) removes the beat's heartbeat, as a worker's.
            assert not any(str(field).startswith("beat:") for field in rt.redis.hkeys(rt.keys.heartbeats))
        finally:
            fleet.stop()
            rt.close()


def test_beat_liveness_follows_the_tasks_it_sends(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """A beat that holds the lock but sends nothing withholds its heartbeat; a standby stays alive
    while it ticks."""
    settings = make_settings(heartbeat_dir=str(tmp_path), heartbeat_interval=0.2, beat_lock_seconds=6)
    app = create_app(settings)
    app.conf.beat_schedule_filename = str(tmp_path / "beat-schedule")
    leader = CalltrackBeatScheduler(app=app, lazy=False)
    standby = CalltrackBeatScheduler(app=app, lazy=False)
    try:
        leader.tick()
        assert not leader.standing_by and leader.sending()
        standby.tick()
        assert standby.standing_by and standby.sending(), "a standby beat is alive without sending"
        heartbeat = Heartbeat(settings, "beat", "beat@test", alive=leader.sending)
        assert heartbeat.beat_once()
        assert liveness(settings, "beat")[0]
        # The leader stops sending (its loop no longer ticks): within its stall bound it goes silent.
        wait_for(lambda: not leader.sending(), timeout=60, what="the idle beat to count as stalled")
        heartbeat.file.unlink()
        assert not heartbeat.beat_once()
        assert not heartbeat.file.exists() and not liveness(settings, "beat")[0]
        leader.tick()  # it sends again
        assert leader.sending() and heartbeat.beat_once()
    finally:
        standby.close()
        leader.close()
        app.runtime().close()


def test_beat_rides_out_a_redis_restart(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """redbeat ends the beat process on a Redis error in a tick; ours stands still and goes on sending
    once Redis is back (its lock and schedule taken or stored again as needed)."""
    with RedisServer(data_dir=tmp_path / "redis") as server:
        settings = make_settings(redis_url=server.url, beat_redis_url=server.url, broker_url=server.url)
        app = create_app(settings)
        app.conf.beat_schedule_filename = str(tmp_path / "beat-schedule")
        beat = CalltrackBeatScheduler(app=app, lazy=False)
        try:
            beat.tick()
            assert beat.holding and beat.sending()
            server.kill()
            sent_before = beat.progress_at
            beat.tick()  # no exception: the process lives on
            assert beat.progress_at == sent_before
            server.start()
            wait_for(lambda: beat.tick() is not None and beat.progress_at > sent_before, timeout=60, what="sends again")
            assert beat.holding
        finally:
            beat.close()
            app.runtime().close()
