"""The six Metrica endpoints: shapes, ids, create_time, list order and paging."""

from __future__ import annotations

import re

from emulator.server import RunningEmulator
from tests.emulator.support import PAST, Metrica, calls_csv

pytest_plugins = ["tests.emulator.fixtures"]

# The calls pages' upload object has no ``type``; the unified endpoint's (upload_1, the chats pages) has.
CALL_KEYS = {
    "id", "create_time", "source_quantity", "line_quantity", "comment", "client_id_type", "status",
    "static_calls_quantity", "dynamic_calls_quantity",
}  # fmt: skip
CONVERSION_KEYS = (CALL_KEYS - {"static_calls_quantity", "dynamic_calls_quantity"}) | {"type"}


def test_upload_calls_answers_the_uploading_object(metrica: Metrica) -> None:
    csv_text = calls_csv(
        f"1001,{PAST},1,+70123456789,35",
        f"1002,{PAST},0,+70123456780,0",
        f"1003,{PAST},,,",
        header="ClientId,DateTime,StaticCall,PhoneNumber,TalkDuration",
    )
    response = metrica.upload(101, csv_text, comment="first batch")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    uploading = response.json()["uploading"]
    assert set(response.json()) == {"uploading"}
    assert set(uploading) == CALL_KEYS
    assert uploading["source_quantity"] == 3
    assert uploading["line_quantity"] == 3
    assert uploading["static_calls_quantity"] == 1
    assert uploading["dynamic_calls_quantity"] == 2
    assert uploading["client_id_type"] == "CLIENT_ID"
    assert uploading["comment"] == "first batch"
    assert uploading["status"] == "UPLOADED"
    assert uploading["create_time"] == "2030-01-01T12:00:00Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", uploading["create_time"])


def test_status_and_list_of_calls(metrica: Metrica) -> None:
    uploaded = metrica.upload(101, calls_csv(f"1,{PAST}")).json()["uploading"]
    status = metrica.status(101, uploaded["id"])
    assert status.status_code == 200
    assert status.json() == {"uploading": uploaded}
    listed = metrica.list(101)
    assert listed.status_code == 200
    assert listed.json() == {"uploadings": [uploaded]}


def test_offline_conversions_endpoints(metrica: Metrica) -> None:
    csv_text = calls_csv(f"order-1,goal1,{PAST},10.50,RUB", header="PurchaseId,Target,DateTime,Price,Currency")
    response = metrica.upload(101, csv_text, kind="conversions", comment="orders")
    assert response.status_code == 200, response.text
    uploading = response.json()["uploading"]
    assert set(uploading) == CONVERSION_KEYS
    assert uploading["client_id_type"] == "PURCHASE_ID"
    assert (uploading["source_quantity"], uploading["line_quantity"]) == (1, 1)
    assert metrica.status(101, uploading["id"], kind="conversions").json() == {"uploading": uploading}
    assert metrica.list(101, kind="conversions").json() == {"uploadings": [uploading]}
    # Calls and conversions are separate collections.
    assert metrica.list(101).json() == {"uploadings": []}
    assert metrica.status(101, uploading["id"]).status_code == 404


def test_ids_increase_globally_across_counters_and_kinds(metrica: Metrica) -> None:
    ids = [
        metrica.upload(101, calls_csv(f"1,{PAST}")).json()["uploading"]["id"],
        metrica.upload(102, calls_csv(f"1,{PAST}")).json()["uploading"]["id"],
        metrica.upload(101, calls_csv(f"1,g,{PAST}", header="ClientId,Target,DateTime"), kind="conversions").json()[
            "uploading"
        ]["id"],
        metrica.upload(101, calls_csv(f"1,{PAST}")).json()["uploading"]["id"],
    ]
    assert ids == sorted(ids) and len(set(ids)) == 4


def test_list_is_newest_first_and_honours_limit_and_offset(metrica: Metrica) -> None:
    ids = [metrica.upload(101, calls_csv(f"{n},{PAST}")).json()["uploading"]["id"] for n in range(1, 6)]
    everything = [u["id"] for u in metrica.list(101).json()["uploadings"]]
    assert everything == ids[::-1]
    page = [u["id"] for u in metrica.list(101, limit=2, offset=1).json()["uploadings"]]
    assert page == [ids[3], ids[2]]
    assert metrica.list(101, limit=10, offset=5).json() == {"uploadings": []}
    assert metrica.list(102).json() == {"uploadings": []}
    assert metrica.list(101, limit=0).status_code == 400
    assert metrica.list(101, offset=-1).status_code == 400


def test_new_goal_name_and_absent_comment_are_accepted(metrica: Metrica, emu: RunningEmulator) -> None:
    response = metrica.upload(102, calls_csv(f"1,{PAST}"), new_goal_name="Calls from the tracker")
    assert response.status_code == 200
    assert response.json()["uploading"]["comment"] is None
    assert emu.admin.uploads(counter=102)[0]["new_goal_name"] == "Calls from the tracker"


def test_quoted_fields_and_cyrillic_survive(metrica: Metrica, emu: RunningEmulator) -> None:
    csv_text = calls_csv(
        f'1,{PAST},"good, ""very"" good",https://shop.example/p?a=1&b=2',
        f"2,{PAST},звонок с сайта,",
        header="ClientId,DateTime,Tag,URL",
    )
    response = metrica.upload(101, csv_text)
    assert response.json()["uploading"]["line_quantity"] == 2
    rows = emu.admin.rows(counter=101)
    assert rows[0]["Tag"] == 'good, "very" good'
    assert rows[0]["URL"] == "https://shop.example/p?a=1&b=2"
    assert rows[1]["Tag"] == "звонок с сайта"
    assert rows[1]["URL"] == ""


def test_the_human_page_lists_uploads(metrica: Metrica, emu: RunningEmulator) -> None:
    metrica.upload(102, calls_csv(f"1,{PAST}", f"x,{PAST}"), comment="<b>night batch</b>")
    page = metrica.http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "http-equiv='refresh'" in text
    assert "Counter 102" in text
    assert "UPLOADED" in text
    assert "&lt;b&gt;night batch&lt;/b&gt;" in text
    assert "<td>2</td><td>1</td>" in text  # source and line quantities
    assert "2030-01-01T12:00:00Z" in text
