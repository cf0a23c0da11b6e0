"""File validation: whole-file 400s naming line and column; row-level problems only drop the row."""

from __future__ import annotations

import re

import pytest

from emulator.server import RunningEmulator
from tests.emulator.support import PAST, Metrica, calls_csv, error_of

pytest_plugins = ["tests.emulator.fixtures"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"ClientId,DateTime\n1,17\xff00\n", ["Line 2, column 5", "UTF-8"]),
        (b"", ["Line 1, column 1", "empty"]),
        (b"\n\n", ["Line 1, column 1", "empty"]),
        (b",,\n1,2,3\n", ["Line 1, column 1", "header"]),
        (f"ClientId,DateTime,Foo\n1,{PAST},x\n".encode(), ["Line 1, column 3", "Foo"]),
        (f"DateTime,Price\n{PAST},1\n".encode(), ["Line 1, column 3", "identifier"]),
        (f"ClientId,UserId,DateTime\n1,u,{PAST}\n".encode(), ["Line 1, column 2", "UserId", "ClientId"]),
        (b"ClientId,Price\n1,2\n", ["Line 1, column 3", "DateTime"]),
        (b"ClientId,DateTime,ClientId\n1,2,3\n", ["Line 1, column 3", "repeats"]),
        (b"ClientId,DateTime\n", ["Line 2, column 1", "no data rows"]),
        (f"ClientId,DateTime,Target\n1,{PAST},g\n".encode(), ["Line 1, column 3", "Target"]),
        (f"PurchaseId,DateTime\np,{PAST}\n".encode(), ["Line 1, column 1", "PurchaseId"]),
    ],
    ids=[
        "bad-utf8", "empty", "blank-lines", "no-header", "unknown-column", "no-identifier",
        "two-identifiers", "no-datetime", "repeated-column", "header-only", "conversion-column-in-calls",
        "purchase-id-in-calls",
    ],
)  # fmt: skip
def test_whole_file_problems_answer_invalid_uploading(metrica: Metrica, content: bytes, expected: list[str]) -> None:
    response = metrica.upload(101, content)
    assert response.status_code == 400
    code, error_type, message = error_of(response)
    assert (code, error_type) == (400, "invalid_uploading")
    assert re.match(r"Line \d+, column \d+: ", message), message
    for fragment in expected:
        assert fragment.lower() in message.lower(), message


def test_conversions_need_target_and_reject_call_columns(metrica: Metrica) -> None:
    no_target = metrica.upload(101, calls_csv(f"1,{PAST}"), kind="conversions")
    assert error_of(no_target)[1] == "invalid_uploading"
    assert "Target" in error_of(no_target)[2]
    call_column = metrica.upload(
        101, calls_csv(f"1,g,{PAST},1", header="ClientId,Target,DateTime,StaticCall"), kind="conversions"
    )
    assert "Line 1, column 4" in error_of(call_column)[2]


def test_rejected_whole_files_are_not_stored(metrica: Metrica, emu: RunningEmulator) -> None:
    metrica.upload(101, b"ClientId,Foo\n1,2\n")
    assert emu.admin.uploads() == []


def test_row_level_problems_count_in_source_but_not_in_lines(metrica: Metrica, emu: RunningEmulator) -> None:
    header = (
        "ClientId,DateTime,StaticCall,Price,Currency,PhoneNumber,TalkDuration,HoldDuration,CallMissed,FirstTimeCaller"
    )
    good = [
        f"1,{PAST},1,10.5,RUB,+70123456789,30,5,0,1",
        f"2,{PAST},,,,,,,,",  # optional cells may be empty
        f'"3",{PAST},0,0,usd,70123456789,0,0,1,0',
    ]
    bad = [
        f"abc,{PAST},1,,,,,,,",  # ClientId not a number
        f",{PAST},1,,,,,,,",  # identifier empty
        "4,yesterday,1,,,,,,,",  # DateTime not Unix seconds
        "5,,1,,,,,,,",  # DateTime empty
        f"6,{PAST},2,,,,,,,",  # StaticCall not a flag
        f'7,{PAST},1,"10,5",,,,,,',  # decimal comma
        f"8,{PAST},1,,RUBL,,,,,",  # currency not three letters
        f"9,{PAST},1,,,+7 012 345,,,,",  # phone with spaces
        f"10,{PAST},1,,,,-1,,,",  # negative duration
        f"11,{PAST},1,,,,,1.5,,",  # fractional duration
        f"12,{PAST},1,,,,,,yes,",  # CallMissed not a flag
        f"13,{PAST},1,,,,,,,",  # too few fields
        f"14,{PAST},1,,,,,,,,,",  # too many fields
    ]
    bad[11] = f"13,{PAST},1"
    response = metrica.upload(101, calls_csv(*good[:2], *bad, good[2], header=header))
    assert response.status_code == 200, response.text
    uploading = response.json()["uploading"]
    assert uploading["source_quantity"] == len(good) + len(bad)
    assert uploading["line_quantity"] == len(good)
    assert uploading["static_calls_quantity"] == 1
    assert uploading["dynamic_calls_quantity"] == 2
    assert [row["ClientId"] for row in emu.admin.rows()] == ["1", "2", "3"]
    rejected = emu.admin.uploads()[0]["rejected"]
    assert [r["line"] for r in rejected] == list(range(4, 4 + len(bad)))
    assert rejected[0]["column"] == "ClientId"


def test_future_datetime_is_a_row_error_for_conversions_only(metrica: Metrica, emu: RunningEmulator) -> None:
    now = int(emu.admin.clock()["timestamp"])
    header = "Yclid,Target,DateTime"
    conversions = metrica.upload(
        101, calls_csv(f"1,g,{now - 60}", f"2,g,{now + 3600}", header=header), kind="conversions"
    )
    assert conversions.status_code == 200
    assert (conversions.json()["uploading"]["source_quantity"], conversions.json()["uploading"]["line_quantity"]) == (
        2,
        1,
    )
    calls = metrica.upload(101, calls_csv(f"1,{now + 3600}", header="Yclid,DateTime"))
    assert calls.json()["uploading"]["line_quantity"] == 1


def test_utf8_bom_crlf_and_blank_lines_are_tolerated(metrica: Metrica) -> None:
    content = f"\ufeffUserId,DateTime\r\nuser-1,{PAST}\r\n\r\nuser-2,{PAST}\r\n".encode()
    response = metrica.upload(101, content)
    assert response.status_code == 200, response.text
    uploading = response.json()["uploading"]
    assert (uploading["source_quantity"], uploading["line_quantity"]) == (2, 2)
    assert uploading["client_id_type"] == "USER_ID"


def test_missing_file_part(metrica: Metrica) -> None:
    response = metrica.http.post(
        "/management/v1/counter/101/offline_conversions/upload_calls",
        files={"document": ("a.csv", b"ClientId,DateTime\n1,2\n")},
        headers=metrica.headers(),
    )
    assert response.status_code == 400
    assert error_of(response)[1] == "missing_parameter"


def test_comment_rules(metrica: Metrica) -> None:
    ok = metrica.upload(101, calls_csv(f"1,{PAST}"), comment="x" * 255)
    assert ok.status_code == 200
    too_long = metrica.upload(101, calls_csv(f"1,{PAST}"), comment="x" * 256)
    assert too_long.status_code == 400
    assert error_of(too_long)[1] == "invalid_parameter"
    free_text = metrica.upload(101, calls_csv(f"1,{PAST}"), comment="Calls, batch #7 (night)")
    assert free_text.status_code == 200

    conversions = calls_csv(f"1,g,{PAST}", header="ClientId,Target,DateTime")
    assert metrica.upload(101, conversions, kind="conversions", comment="Заказы2030abc").status_code == 200
    for comment in ("two words", "batch-7", "batch#7", "x" * 256):
        response = metrica.upload(101, conversions, kind="conversions", comment=comment)
        assert response.status_code == 400, comment
        assert error_of(response)[1] == "invalid_parameter"


def test_legacy_client_id_type(metrica: Metrica, emu: RunningEmulator) -> None:
    matching = metrica.upload(101, calls_csv(f"1,{PAST}"), client_id_type="CLIENT_ID")
    assert matching.status_code == 200
    mismatch = metrica.upload(101, calls_csv(f"1,{PAST}"), client_id_type="USER_ID")
    assert mismatch.status_code == 400
    _, error_type, message = error_of(mismatch)
    assert error_type == "invalid_uploading"
    assert "Line 1, column 1" in message and "USER_ID" in message
    unknown = metrica.upload(101, calls_csv(f"1,{PAST}"), client_id_type="PURCHASE_ID")
    assert error_of(unknown)[1] == "invalid_parameter"
    purchase = metrica.upload(
        101,
        calls_csv(f"p1,g,{PAST}", header="PurchaseId,Target,DateTime"),
        kind="conversions",
        client_id_type="PURCHASE_ID",
    )
    assert purchase.status_code == 200
    assert len(emu.admin.uploads()) == 2
