"""Admin API, EmulatorAdmin helper, config loading and running ``python -m emulator``."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from emulator.config import EmulatorConfig, config_from_dict, load_config
from emulator.server import RunningEmulator
from tests.emulator.support import PAST, TOKENS, Metrica, calls_csv

pytest_plugins = ["tests.emulator.fixtures"]

ROOT = Path(__file__).resolve().parents[2]


def test_uploads_and_rows_filters(metrica: Metrica, emu: RunningEmulator) -> None:
    metrica.upload(101, calls_csv(f"1,{PAST}", f"2,{PAST}"), comment="a")
    metrica.upload(102, calls_csv(f"3,{PAST}"), comment="b")
    metrica.upload(101, calls_csv(f"4,g,{PAST}", header="ClientId,Target,DateTime"), kind="conversions")
    assert [u["comment"] for u in emu.admin.uploads()] == ["a", "b", None]
    assert [u["counter"] for u in emu.admin.uploads(counter=101)] == [101, 101]
    assert [u["kind"] for u in emu.admin.uploads(kind="conversions")] == ["conversions"]
    bare = emu.admin.uploads(counter=102, with_rows=False)[0]
    assert "rows" not in bare and bare["columns"] == ["ClientId", "DateTime"]
    rows = emu.admin.rows(kind="calls")
    first_id = emu.admin.uploads()[0]["id"]
    assert rows[0] == {
        "ClientId": "1", "DateTime": str(PAST), "upload_id": str(first_id), "comment": "a",
        "counter": "101", "kind": "calls",
    }  # fmt: skip
    assert [r["ClientId"] for r in rows] == ["1", "2", "3"]
    assert [r["ClientId"] for r in emu.admin.rows(counter=101)] == ["1", "2", "4"]
    # The plain JSON form of the endpoint holds the same rows as the helper (which fetches CSV).
    plain = httpx.get(emu.base_url + "/_emulator/rows", params={"kind": "calls"}).json()["rows"]
    assert plain == rows
    with pytest.raises(httpx.HTTPStatusError):
        emu.admin.uploads(kind="visits")


def test_reset_forgets_uploads_but_ids_keep_increasing(metrica: Metrica, emu: RunningEmulator) -> None:
    before = metrica.upload(101, calls_csv(f"1,{PAST}")).json()["uploading"]["id"]
    emu.admin.set_faults(backend_error_share=1.0, kinds="status")
    emu.admin.advance_clock(100)
    emu.admin.reset()
    assert emu.admin.uploads() == []
    assert emu.admin.faults()["rules"] == []
    assert emu.admin.clock()["now"] == "2030-01-01T12:00:00Z"
    after = metrica.upload(101, calls_csv(f"1,{PAST}")).json()["uploading"]["id"]
    assert after > before


def test_stats(metrica: Metrica, emu: RunningEmulator) -> None:
    metrica.upload(101, calls_csv(f"1,{PAST}", f"x,{PAST}"))
    metrica.list(101)
    metrica.list(201)
    stats = emu.admin.stats()
    assert stats["uploads"] == 1
    assert stats["rows"] == 1
    assert stats["upload_statuses"] == {"UPLOADED": 1}
    assert stats["counts"]["requests"] == 3
    assert stats["counts"]["requests.upload"] == 1
    assert stats["counts"]["status.200"] == 2
    assert stats["counts"]["status.403"] == 1


def test_clock_controls(emu: RunningEmulator) -> None:
    assert emu.admin.clock() == {"now": "2030-01-01T12:00:00Z", "timestamp": 1893499200.0, "frozen": True}
    assert emu.admin.advance_clock(61)["now"] == "2030-01-01T12:01:01Z"
    assert emu.admin.set_clock("2031-02-03T04:05:06+00:00")["now"] == "2031-02-03T04:05:06Z"
    running = emu.admin.unfreeze_clock()
    assert running["frozen"] is False
    assert emu.admin.freeze_clock()["frozen"] is True


def test_settings(emu: RunningEmulator) -> None:
    assert emu.admin.settings() == {"step_seconds": 10.0, "known_visitors": None, "trust_forwarded_for": False}
    assert emu.admin.set_known_visitors([1, "u"])["known_visitors"] == ["1", "u"]
    assert emu.admin.set_known_visitors(None)["known_visitors"] is None
    with pytest.raises(httpx.HTTPStatusError):
        emu.admin.settings(step_seconds=0)


def test_config_from_dict_checks_keys() -> None:
    config = config_from_dict(
        {
            "accounts": [{"token": "a", "login": "la", "counters": [1, 2]}, {"token": "b"}],
            "quotas": {"requests_per_ip_per_second": 0, "http_status": 420},
            "known_visitors": [123, "u"],
            "clock": {"start": "2030-01-01T00:00:00Z", "frozen": True},
        }
    )
    assert config.accounts[0].counters == frozenset({1, 2})
    assert config.accounts[1].login == "b" and config.accounts[1].counters is None
    assert config.quotas.requests_per_ip_per_second is None
    assert config.quotas.http_status == 420
    assert config.known_visitors == frozenset({"123", "u"})
    assert config.clock_start == 1893456000.0
    for bad in ({"step": 1}, {"quotas": {"http_status": 500}}, {"faults": [{"share": 1}]}, {"step_seconds": 0}):
        with pytest.raises(ValueError, match=r"."):
            config_from_dict(bad)


def test_example_config_loads() -> None:
    config = load_config(ROOT / "emulator" / "example.toml")
    assert config.accounts[0].token == "demo-token"
    assert config.quotas.parallel_requests_per_login == 3
    assert EmulatorConfig().accounts[0].counters is None
    assert EmulatorConfig().step_seconds == 5.0
    assert EmulatorConfig().quotas.http_status == 429


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_runs_as_a_module(tmp_path: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", str(port), "--config", str(ROOT / "emulator" / "example.toml")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        client = Metrica(f"http://127.0.0.1:{port}", token="agency-token")
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "python -m emulator did not start"
            time.sleep(0.05)
        assert client.list(1001).status_code == 200
        assert client.list(1003).status_code == 403
        assert client.list(1001, token=TOKENS["alice"]).status_code == 403
        client.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
