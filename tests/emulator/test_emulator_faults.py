"""Fault injection: error shares, latency, dropped connections before/after storing, scripts, seeds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from emulator.config import EmulatorConfig, load_config
from emulator.server import RunningEmulator
from tests.emulator.support import PAST, Metrica, calls_csv, error_of

pytest_plugins = ["tests.emulator.fixtures"]

DROPPED = (httpx.RemoteProtocolError, httpx.ReadError)


def test_backend_error_share(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.set_faults(backend_error_share=1.0, kinds=["upload"])
    response = metrica.upload(101, calls_csv(f"1,{PAST}"))
    assert response.status_code == 503
    assert error_of(response)[:2] == (503, "backend_error")
    assert emu.admin.uploads() == []
    assert metrica.list(101).status_code == 200  # out of the rule's scope


def test_timeout_share(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.set_faults(timeout_share=1.0)
    response = metrica.list(101)
    assert response.status_code == 504
    assert error_of(response)[:2] == (504, "timeout")


def test_faults_scoped_by_counter(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.set_faults(backend_error_share=1.0, counters=[102])
    assert metrica.upload(101, calls_csv(f"1,{PAST}")).status_code == 200
    assert metrica.upload(102, calls_csv(f"1,{PAST}")).status_code == 503


def test_latency_is_added(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.set_faults(latency=(0.05, 0.1), kinds="status")
    upload_id = metrica.upload(101, calls_csv(f"1,{PAST}")).json()["uploading"]["id"]
    assert metrica.status(101, upload_id).status_code == 200
    counts = emu.admin.stats()["counts"]
    assert counts["faults.latency"] == 1


def test_drop_before_store_stores_nothing(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.set_faults(drop_before_store_share=1.0, kinds="upload")
    with pytest.raises(DROPPED):
        metrica.upload(101, calls_csv(f"1,{PAST}"))
    assert emu.admin.uploads() == []
    emu.admin.clear_faults()
    assert metrica.list(101).json() == {"uploadings": []}


def test_drop_after_store_keeps_the_upload(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.set_faults(drop_after_store_share=1.0, kinds="upload")
    with pytest.raises(DROPPED):
        metrica.upload(101, calls_csv(f"1,{PAST}", f"2,{PAST}"), comment="batch-42")
    uploads = emu.admin.uploads()
    assert len(uploads) == 1
    assert uploads[0]["comment"] == "batch-42"
    assert [row["ClientId"] for row in uploads[0]["rows"]] == ["1", "2"]
    # A client that lost the answer finds its upload in the list by its comment.
    listed = metrica.list(101).json()["uploadings"]
    assert [u["comment"] for u in listed] == ["batch-42"]
    assert emu.admin.stats()["counts"]["status.dropped"] == 1


def test_dropped_status_request(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.set_faults(drop_after_store_share=1.0, kinds="list")
    with pytest.raises(DROPPED):
        metrica.list(101)
    emu.admin.clear_faults()
    assert metrica.list(101).status_code == 200  # the connection pool recovers


def test_scripted_answers_in_order(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.script(
        [
            503,
            "drop_after_store",
            {"status": 429, "error_type": "quota_requests_by_ip", "message": "slow down"},
            "pass",
            "drop_before_store",
            {"status": 500, "body": {"unexpected": True}},
        ],
        kind="upload",
        counter=101,
    )
    outcomes: list[object] = []
    for n in range(7):
        try:
            outcomes.append(metrica.upload(101, calls_csv(f"{n},{PAST}"), comment=f"n{n}").status_code)
        except DROPPED:
            outcomes.append("dropped")
    assert outcomes == [503, "dropped", 429, 200, "dropped", 500, 200]
    assert [u["comment"] for u in emu.admin.uploads()] == ["n1", "n3", "n6"]
    assert emu.admin.faults()["script"] == []


def test_scripted_error_body_and_scope(metrica: Metrica, emu: RunningEmulator) -> None:
    # Entries are tried in order; a request takes the next answer of the first entry matching it.
    emu.admin.script([{"status": 400, "body": {"raw": 1}}], kind="list", counter=102)
    emu.admin.script([{"status": 429, "error_type": "quota_requests_by_ip", "message": "slow down"}], kind="list")
    code, error_type, message = error_of(metrica.list(101))
    assert (code, error_type, message) == (429, "quota_requests_by_ip", "slow down")
    assert metrica.list(101).status_code == 200
    raw = metrica.list(102)
    assert (raw.status_code, raw.json()) == (400, {"raw": 1})
    assert metrica.list(102).status_code == 200
    assert metrica.upload(102, calls_csv(f"1,{PAST}")).status_code == 200


def test_shares_are_reproducible_with_a_seed(metrica: Metrica, emu: RunningEmulator) -> None:
    def run() -> list[int]:
        emu.admin.set_faults(backend_error_share=0.3, timeout_share=0.2, kinds="list", seed=1234)
        return [metrica.list(101).status_code for _ in range(40)]

    first = run()
    assert {200, 503, 504} <= set(first)
    assert run() == first


def test_invalid_fault_specs_are_refused(emu: RunningEmulator) -> None:
    with pytest.raises(httpx.HTTPStatusError):
        emu.admin.set_faults(backend_error_share=0.7, timeout_share=0.7)
    with pytest.raises(httpx.HTTPStatusError):
        emu.admin.set_faults(kinds=["uploads"])
    with pytest.raises(httpx.HTTPStatusError):
        emu.admin.script(["explode"])


def test_faults_from_a_toml_config(tmp_path: Path, start_emulator: Callable[[EmulatorConfig], RunningEmulator]) -> None:
    path = tmp_path / "emulator.toml"
    path.write_text(
        """
seed = 3
[clock]
start = 2030-05-06T07:08:09Z
frozen = true

[[accounts]]
token = "t"
login = "l"
counters = [5]

[[faults]]
timeout_share = 1.0
kinds = ["status"]

[[script]]
kind = "upload"
answers = [503, "pass"]
""",
        encoding="utf-8",
    )
    running = start_emulator(load_config(path))
    client = Metrica(running.base_url, token="t")
    try:
        assert client.upload(5, calls_csv(f"1,{PAST}")).status_code == 503
        uploading = client.upload(5, calls_csv(f"1,{PAST}")).json()["uploading"]
        assert uploading["create_time"] == "2030-05-06T07:08:09Z"
        assert client.status(5, uploading["id"]).status_code == 504
        assert client.list(6).status_code == 404
    finally:
        client.close()
