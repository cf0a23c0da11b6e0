"""Several real worker processes against one Redis: quotas hold fleet-wide, one beat runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from config.settings import Settings
from emulator.config import EmulatorConfig, QuotaConfig
from emulator.faults import FaultRule
from emulator.server import start_in_thread
from tests.chaos.harness import Fleet
from tests.helpers import make_call, wait_for
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
        time.sleep(6)

        def senders() -> list[int]:
            return [i for i in range(2) if "Sending due task" in (tmp_path / f"beat{i}.log").read_text()]

        active = senders()
        assert len(active) == 1, "exactly one beat may send"
        (leader,) = active
        proc = fleet.beats[leader]
        assert proc is not None
        proc.kill()
        proc.wait(10)
        fleet.beats[leader] = proc  # keep it dead: no restart
        standby = 1 - leader
        wait_for(
            lambda: "Sending due task" in (tmp_path / f"beat{standby}.log").read_text(),
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
        time.sleep(3)
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
