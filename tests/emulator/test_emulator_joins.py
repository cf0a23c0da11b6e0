"""join_rules: join windows from the counter's offline options, goals for Target, static calls."""

from __future__ import annotations

from emulator.clock import parse_iso
from emulator.server import RunningEmulator
from tests.emulator.support import START, STEP, Metrica, calls_csv

pytest_plugins = ["tests.emulator.fixtures"]

NOW = int(parse_iso(START))
HOUR, DAY = 3600, 86400


def final_status(metrica: Metrica, emu: RunningEmulator, upload_id: int, kind: str = "calls") -> str:
    emu.admin.advance_clock(STEP * 4)
    status: str = metrica.status(101, upload_id, kind).json()["uploading"]["status"]
    return status


def test_off_by_default(metrica: Metrica, emu: RunningEmulator) -> None:
    assert emu.admin.rules()["join_rules"] is False
    body = metrica.upload(101, calls_csv(f"1,{NOW - 60 * DAY}")).json()["uploading"]
    assert body["line_quantity"] == 1
    assert emu.admin.uploads()[0]["joined_quantity"] is None


def test_default_window_is_16_hours(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.rules(join_rules=True)
    csv_text = calls_csv(f"1,{NOW - HOUR}", f"2,{NOW - 20 * HOUR}", f"3,{NOW - 30 * DAY}", f"4,{NOW + HOUR}")
    body = metrica.upload(101, csv_text).json()["uploading"]
    assert (body["source_quantity"], body["line_quantity"]) == (4, 1)
    upload = emu.admin.uploads()[0]
    assert upload["joined_quantity"] == 1
    assert upload["unjoined"] == {"outside the join window": 2, "the visit is after the upload": 1}
    assert {r["reason"] for r in upload["rejected"]} == {
        "not joined: outside the join window", "not joined: the visit is after the upload",
    }  # fmt: skip
    assert final_status(metrica, emu, body["id"]) == "PROCESSED"


def test_extended_window_grows_from_the_moment_it_is_on(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.rules(join_rules=True)
    emu.admin.set_counter(101, offline_options={"offline_calls_extended_threshold": 1})
    emu.admin.advance_clock(10 * DAY)
    now = NOW + 10 * DAY
    # A visit 5 days ago (after switching on) joins; one before switching on does not.
    body = metrica.upload(101, calls_csv(f"1,{now - 5 * DAY}", f"2,{now - 12 * DAY}")).json()["uploading"]
    assert body["line_quantity"] == 1
    # Backdated: on for a month, so the window is the full 21 days.
    emu.admin.set_counter(101, enabled_at={"offline_calls_extended_threshold": "2029-11-01T00:00:00Z"})
    body = metrica.upload(101, calls_csv(f"1,{now - 20 * DAY}", f"2,{now - 22 * DAY}")).json()["uploading"]
    assert body["line_quantity"] == 1


def test_static_calls_count_but_never_join(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.rules(join_rules=True)
    csv_text = calls_csv(f"1,{NOW - 40 * DAY},1", f"2,{NOW - 40 * DAY},1", header="ClientId,DateTime,StaticCall")
    body = metrica.upload(101, csv_text).json()["uploading"]
    assert (body["line_quantity"], body["static_calls_quantity"]) == (2, 2)
    assert final_status(metrica, emu, body["id"]) == "LINKAGE_FAILURE"


def test_conversions_need_a_javascript_event_goal(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.rules(join_rules=True)
    csv_text = calls_csv(f"1,order_ok,{NOW - HOUR}", f"2,unknown,{NOW - HOUR}", header="ClientId,Target,DateTime")
    before = metrica.upload(101, csv_text, kind="conversions").json()["uploading"]
    assert before["line_quantity"] == 0
    assert final_status(metrica, emu, before["id"], "conversions") == "LINKAGE_FAILURE"
    goal = {"name": "Order", "type": "action", "conditions": [{"type": "exact", "url": "order_ok"}]}
    metrica.http.post("/management/v1/counter/101/goals", json={"goal": goal}, headers=metrica.headers())
    after = metrica.upload(101, csv_text, kind="conversions").json()["uploading"]
    assert (after["source_quantity"], after["line_quantity"]) == (2, 1)
    assert emu.admin.uploads(kind="conversions")[-1]["unjoined"] == {"no JavaScript-event goal for Target": 1}


def test_count_unjoined_keeps_rows_in_line_quantity(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.rules(join_rules=True, count_unjoined=True)
    emu.admin.set_known_visitors(["1"])
    body = metrica.upload(101, calls_csv(f"1,{NOW - 30 * DAY}", f"2,{NOW - HOUR}")).json()["uploading"]
    assert body["line_quantity"] == 2
    upload = emu.admin.uploads()[0]
    assert upload["joined_quantity"] == 0
    assert upload["unjoined"] == {"outside the join window": 1, "unknown visitor": 1}
    assert final_status(metrica, emu, body["id"]) == "LINKAGE_FAILURE"
