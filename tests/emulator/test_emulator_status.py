"""Statuses move UPLOADED -> EXPORTED -> MATCHED -> PROCESSED (or LINKAGE_FAILURE) on the emulator clock."""

from __future__ import annotations

from collections.abc import Callable

from emulator.config import EmulatorConfig
from emulator.server import RunningEmulator
from tests.emulator.support import PAST, STEP, Metrica, calls_csv

pytest_plugins = ["tests.emulator.fixtures"]


def statuses_over_time(metrica: Metrica, emu: RunningEmulator, upload_id: int, kind: str = "calls") -> list[str]:
    seen = [metrica.status(101, upload_id, kind).json()["uploading"]["status"]]
    emu.admin.advance_clock(STEP * 1.5)
    seen.append(metrica.status(101, upload_id, kind).json()["uploading"]["status"])
    for _ in range(3):
        emu.admin.advance_clock(STEP)
        seen.append(metrica.status(101, upload_id, kind).json()["uploading"]["status"])
    return seen


def test_calls_progress_to_processed(metrica: Metrica, emu: RunningEmulator) -> None:
    upload_id = metrica.upload(101, calls_csv(f"1,{PAST}")).json()["uploading"]["id"]
    assert statuses_over_time(metrica, emu, upload_id) == [
        "UPLOADED", "EXPORTED", "MATCHED", "PROCESSED", "PROCESSED",
    ]  # fmt: skip
    assert metrica.list(101).json()["uploadings"][0]["status"] == "PROCESSED"


def test_conversions_progress_too(metrica: Metrica, emu: RunningEmulator) -> None:
    csv_text = calls_csv(f"1,g,{PAST}", header="ClientId,Target,DateTime")
    upload_id = metrica.upload(101, csv_text, kind="conversions").json()["uploading"]["id"]
    assert statuses_over_time(metrica, emu, upload_id, "conversions")[-1] == "PROCESSED"


def test_linkage_failure_when_no_identifier_is_a_known_visitor(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.set_known_visitors(["111", "112"])
    unknown = metrica.upload(101, calls_csv(f"222,{PAST}", f"333,{PAST}")).json()["uploading"]["id"]
    known = metrica.upload(101, calls_csv(f"222,{PAST}", f"112,{PAST}")).json()["uploading"]["id"]
    assert statuses_over_time(metrica, emu, unknown) == [
        "UPLOADED", "EXPORTED", "MATCHED", "LINKAGE_FAILURE", "LINKAGE_FAILURE",
    ]  # fmt: skip
    assert metrica.status(101, known).json()["uploading"]["status"] == "PROCESSED"


def test_step_duration_changes_at_run_time(metrica: Metrica, emu: RunningEmulator) -> None:
    upload_id = metrica.upload(101, calls_csv(f"1,{PAST}")).json()["uploading"]["id"]
    emu.admin.settings(step_seconds=1000)
    emu.admin.advance_clock(1500)
    assert metrica.status(101, upload_id).json()["uploading"]["status"] == "EXPORTED"


def test_known_visitors_from_config(start_emulator: Callable[[EmulatorConfig], RunningEmulator]) -> None:
    running = start_emulator(EmulatorConfig(known_visitors=frozenset({"u-1"}), step_seconds=5, clock_frozen=True))
    client = Metrica(running.base_url, token="demo-token")
    try:
        miss = client.upload(7, calls_csv(f"u-2,{PAST}", header="UserId,DateTime")).json()["uploading"]["id"]
        hit = client.upload(7, calls_csv(f"u-1,{PAST}", header="UserId,DateTime")).json()["uploading"]["id"]
        running.admin.advance_clock(3600)
        assert client.status(7, miss).json()["uploading"]["status"] == "LINKAGE_FAILURE"
        assert client.status(7, hit).json()["uploading"]["status"] == "PROCESSED"
    finally:
        client.close()
