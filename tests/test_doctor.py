"""``ctl doctor`` on a good configuration (AOF Redis, a token that reaches its counter) and on broken ones."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from config.settings import Settings
from ctl.__main__ import main
from ctl.context import Context
from emulator.config import Account
from standalone.redis_server import RedisServer
from tests.pipeline import running_emulator
from worker.intake.routing import Route
from worker.intake.service import build_intake
from worker.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
GOOD_TOKEN = "AQAAAAAdoctorGoodToken0123456789"


def doctor(settings: Settings) -> tuple[int, dict[str, tuple[str, str]]]:
    result = CliRunner().invoke(main, ["doctor", "--json"], obj=Context(settings), catch_exceptions=False)
    report = orjson.loads(result.stdout)
    return result.exit_code, {c["name"]: (c["status"], c["detail"]) for c in report["checks"]}


@pytest.fixture
def aof_redis(redis_url: str, tmp_path: Path) -> Iterator[str]:
    with RedisServer(data_dir=tmp_path / "redis") as server:
        yield server.url


def test_doctor_passes_a_good_deployment(make_settings: Callable[..., Settings], aof_redis: str) -> None:
    accounts = (Account(GOOD_TOKEN, "good", frozenset({101, 202})),)
    with running_emulator(accounts=accounts) as emulator:
        settings = make_settings(
            redis_url=aof_redis,
            metrica_base_url=emulator.base_url,
            metrica_counter_tokens={101: GOOD_TOKEN},
            metrica_token=GOOD_TOKEN,
            flower_password="a-long-flower-password",
            caller_hash_secret="a-caller-hash-secret",
        )
        rt = Runtime(settings)
        build_intake(rt).routing.add([Route("+74951112233", 202)])
        rt.close()
        code, checks = doctor(settings)
    assert code == 0, checks
    names = ("configuration", "redis", "redis persistence", "redis memory policy", "redis maxmemory", "counter 101")
    for name in (*names, "counter 202"):
        assert checks[name][0] == "ok", (name, checks[name])
    assert checks["clock vs Redis"][0] == "ok" and checks["clock vs Metrica"][0] == "ok"
    assert checks["workers"][0] == "warn"  # none runs here: said, not failed
    assert GOOD_TOKEN not in str(checks)


def test_doctor_names_what_is_broken(make_settings: Callable[..., Settings], redis: object, tmp_path: Path) -> None:
    accounts = (Account(GOOD_TOKEN, "good", frozenset({101})),)
    with running_emulator(accounts=accounts) as emulator, RedisServer(data_dir=tmp_path / "redis") as server:
        client = Runtime(make_settings(redis_url=server.url)).redis
        client.config_set("appendonly", "no")
        client.config_set("maxmemory-policy", "allkeys-lru")
        client.config_set("maxmemory", 0)
        settings = make_settings(
            redis_url=server.url,
            metrica_base_url=emulator.base_url,
            metrica_counter_tokens={101: "AQAAAAAwrongToken", 202: GOOD_TOKEN},
        )
        code, checks = doctor(settings)
    assert code == 1
    assert checks["redis persistence"][0] == "fail" and "appendonly is no" in checks["redis persistence"][1]
    assert checks["redis memory policy"][0] == "fail" and "allkeys-lru" in checks["redis memory policy"][1]
    assert checks["redis maxmemory"][0] == "fail" and "maxmemory is not set" in checks["redis maxmemory"][1]
    assert checks["counter 101"][0] == "fail" and "invalid_token" in checks["counter 101"][1]
    assert checks["counter 202"][0] == "fail"  # the token has no access to this counter
    assert checks["flower"][0] == "warn" and checks["caller hash"][0] == "warn"
    assert "wrongToken" not in str(checks) and GOOD_TOKEN not in str(checks)

    # Redis down: said once, the checks that need it are not attempted.
    code, checks = doctor(make_settings(redis_url="redis://127.0.0.1:1/0"))
    assert code == 1 and checks["redis"][0] == "fail" and "counter 101" not in checks


def test_doctor_reports_a_bad_configuration() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CALLTRACK_SHARDS": "0", "CALLTRACK_METRICA_COUNTER_TOKENS": "x"}
    out = subprocess.run(
        [sys.executable, "-m", "ctl", "doctor"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "CALLTRACK_SHARDS" in out.stdout and "FAIL" in out.stdout
    assert "CALLTRACK_METRICA_COUNTER_TOKENS" in out.stdout


def test_doctor_warns_above_the_producers_watermark(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with RedisServer(data_dir=tmp_path / "redis") as server:
        settings = make_settings(redis_url=server.url, producer_memory_watermark=0.5)
        client = Runtime(settings).redis
        client.config_set("maxmemory", int(client.info("memory")["used_memory"] * 1.5))
        _, checks = doctor(settings)
    assert (
        checks["redis maxmemory"][0] == "warn" and "above the producers' watermark 50%" in checks["redis maxmemory"][1]
    )


def test_doctor_checks_a_cluster_health_and_slot_coverage(cluster_settings: Callable[..., Settings]) -> None:
    """On the local 3-master cluster: every node's CLUSTER INFO says ok with 16384 slots assigned."""
    settings = cluster_settings(flower_password="a-long-flower-password", caller_hash_secret="a-caller-hash-secret")
    _, checks = doctor(settings)
    status, detail = checks["redis cluster"]
    assert status == "ok", detail
    assert "(3 masters)" in detail and "16384/16384 slots assigned" in detail
    assert checks["redis maxmemory"][0] == "ok"


def test_cluster_health_fails_on_uncovered_slots() -> None:
    from worker.store import cluster_health

    class Node:
        def __init__(self, text: str) -> None:
            self.text = text

        def execute_command(self, *_: object) -> str:
            return self.text

    ok, line = cluster_health(Node("cluster_state:fail\r\ncluster_slots_assigned:10923\r\ncluster_slots_ok:10923\r\n"))  # type: ignore[arg-type]
    assert not ok and "10923/16384" in line
    ok, _ = cluster_health(Node("cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n"))  # type: ignore[arg-type]
    assert ok
