"""Heartbeats (issue 23, item 6): a SIGKILLed node's entry is forgotten; live nodes are unaffected."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson

from config.settings import Settings
from tests.helpers import wait_for
from worker.ops.health import FORGET, Heartbeat, readiness
from worker.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import sys, time
from config.settings import Settings
from worker.ops.health import Heartbeat
settings = Settings(_env_file=None, redis_url=sys.argv[1], namespace=sys.argv[2], heartbeat_interval=0.2,
                    heartbeat_dir=sys.argv[3])
Heartbeat(settings, "worker", "doomed@test").start()
time.sleep(600)
"""


def test_a_killed_nodes_heartbeat_is_forgotten(
    make_settings: Callable[..., Settings], runtime: Runtime, tmp_path: Path
) -> None:
    settings = make_settings(heartbeat_interval=0.2, heartbeat_dir=str(tmp_path / "live"))
    key = runtime.keys.heartbeats
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, settings.redis_url, settings.namespace, str(tmp_path / "dead")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    live = Heartbeat(settings, "worker", "alive@test").start()
    try:
        wait_for(lambda: runtime.redis.hexists(key, "worker:doomed@test"), timeout=60, what="the child's heartbeat")
        dead_pid = orjson.loads(str(runtime.redis.hget(key, "worker:doomed@test")))["pid"]
        assert dead_pid == child.pid
        child.send_signal(signal.SIGKILL)  # it never says goodbye
        child.wait(10)
        assert runtime.redis.hexists(key, "worker:doomed@test"), "still there right after the kill"
        wait_for(
            lambda: not runtime.redis.hexists(key, "worker:doomed@test"),
            timeout=60,
            what=f"the dead node's heartbeat forgotten after {FORGET} intervals",
        )
        assert runtime.redis.hexists(key, "worker:alive@test")
        ok, why = readiness(settings, "worker")
        assert ok, why
        assert runtime.redis.ttl(key) > 0, "the hash expires once no node writes it"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        live.stop()
    assert not runtime.redis.hexists(key, "worker:alive@test"), "a clean stop removes its own entry"


def test_entries_are_forgotten_by_their_own_interval(
    make_settings: Callable[..., Settings], runtime: Runtime, tmp_path: Path
) -> None:
    """A slow node (long interval, as written by itself) is not forgotten by a fast one's bound; an
    entry of the previous release (no interval) is judged by the writer's; unreadable ones go."""
    settings = make_settings(heartbeat_interval=0.2, heartbeat_dir=str(tmp_path))
    key = runtime.keys.heartbeats
    now_ms = int(runtime.redis.time()[0] * 1000)
    old_ms = now_ms - int(FORGET * 0.2 * 1000) - 5000
    runtime.redis.hset(
        key,
        mapping={
            "worker:slow@a": orjson.dumps({"at": old_ms, "host": "a", "pid": 1, "every": 60}),
            "worker:old@b": orjson.dumps({"at": old_ms, "host": "b", "pid": 2}),
            "worker:junk@c": "not json",
        },
    )
    assert Heartbeat(settings, "worker", "writer@test").beat_once()
    assert set(runtime.redis.hkeys(key)) == {"worker:slow@a", "worker:writer@test"}
