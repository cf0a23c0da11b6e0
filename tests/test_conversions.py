"""Offline conversions: the model's rules, the producers, and the whole pipeline through the emulator."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from click.testing import CliRunner

from config.settings import Settings
from ctl.__main__ import main as ctl_main
from ctl.context import Context
from ingest.crm_csv import ColumnMap, MappingError, import_file
from tests.helpers import make_call, stored_rows, wait_for
from tests.pipeline import running_emulator, running_ingest, running_worker
from worker.dataplane.marks import _to_base36, call_ref_value, parse_call_ref
from worker.delivery.drain import drain
from worker.delivery.producer import call_ref_digest, dedup_digest
from worker.intake.call_refs import batch_tail, find_call, locate, record_conversion
from worker.model.conversions import ConversionEvent, validate_conversions
from worker.model.fields import TimePolicy
from worker.model.kinds import IdType, UploadKind
from worker.runtime import Runtime

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
POLICY = TimePolicy.from_days(21, 300)
ID_COLUMNS = {"ClientId", "UserId", "Yclid", "PurchaseId"}


def conversion(n: int, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "counter_id": 101,
        "conversion_id": f"order-{n}",
        "source": "shop",
        "ClientId": str(10**15 + n),
        "Target": "order_paid",
        "DateTime": int(datetime.now(UTC).timestamp()) - 3600,
        "Price": f"{n}.50",
        "Currency": "RUB",
    }
    doc.update(extra)
    return {k: v for k, v in doc.items() if v is not None}


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"ClientId": None}, "ClientId|UserId|Yclid|PurchaseId", "at least one"),
        ({"Target": None}, "Target", "required"),
        ({"Target": "order paid!"}, "Target", "goal identifier"),
        ({"DateTime": int(NOW.timestamp()) + 60}, "DateTime", "in the past"),
        ({"DateTime": int(NOW.timestamp())}, "DateTime", "in the past"),
        ({"DateTime": int((NOW - timedelta(days=30)).timestamp())}, "DateTime", "join window"),
        ({"Price": "12,5"}, "Price", "written with '.'"),
        ({"Currency": "EURO"}, "Currency", "ISO 4217"),
        ({"conversion_id": None}, "conversion_id", "required"),
        ({"Tag": "x"}, "Tag", "not a known field"),
    ],
)
def test_each_conversion_rule_names_the_field(overrides: dict[str, Any], field: str, words: str) -> None:
    raw = conversion(1, DateTime=int(NOW.timestamp()) - 60)
    for key, value in overrides.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    accepted, rejected = validate_conversions([raw], NOW, POLICY)
    assert not accepted
    assert any(e.field == field and words in e.message for e in rejected[0].errors), rejected[0].errors


def test_purchase_id_and_precedence() -> None:
    only_purchase = ConversionEvent.model_validate(conversion(1, ClientId=None, PurchaseId="P-77"))
    assert only_purchase.id_type is IdType.PURCHASE_ID
    assert only_purchase.to_row()["PurchaseId"] == "P-77"
    both = ConversionEvent.model_validate(conversion(1, PurchaseId="P-77"))
    assert both.id_type is IdType.CLIENT_ID and "PurchaseId" not in both.to_row()
    assert both.bucket.kind is UploadKind.CONVERSIONS


def test_future_conversion_is_refused_before_upload_and_nothing_is_stored(runtime: Runtime) -> None:
    future = conversion(1, DateTime=int(datetime.now(UTC).timestamp()) + 30)
    result = runtime.producer.submit([future], kind=UploadKind.CONVERSIONS)
    assert not result.accepted and result.rejected[0].errors[0].field == "DateTime"
    assert all(runtime.redis.xlen(runtime.keys.stream(s)) == 0 for s in range(runtime.keys.shards))


def test_conversions_and_calls_travel_the_pipeline_to_processed(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with running_emulator(step_seconds=0.1) as emulator:
        settings = make_settings(metrica_base_url=emulator.base_url, flush_max_rows=40)
        docs = [
            conversion(
                n, counter_id=(101, 202)[n % 2], **({"ClientId": None, "PurchaseId": f"P-{n}"} if n % 3 == 0 else {})
            )
            for n in range(120)
        ]
        calls = [make_call(101, n) for n in range(30)]
        with running_worker(settings, tmp_path) as app:
            rt = app.runtime()
            producer = Runtime(settings).producer
            assert len(producer.submit(docs, kind=UploadKind.CONVERSIONS).accepted) == 120
            assert len(producer.submit(docs[:10], kind=UploadKind.CONVERSIONS).accepted) == 10  # repeats
            assert len(producer.submit(calls).accepted) == 30

            def states() -> set[str]:
                keys = rt.redis.scan_iter(match=f"{settings.namespace}:*:batch:*")
                return {cast(str, rt.redis.hget(key, "state")) for key in keys}

            wait_for(
                lambda: emulator.admin.stats()["rows"] == 150 and states() == {"PROCESSED"},
                timeout=90,
                what="every batch PROCESSED",
            )
        uploads = emulator.admin.uploads(kind="conversions")
        rows = emulator.admin.rows(kind="conversions")
    assert len(rows) == 120
    assert all(u["comment"].isalnum() for u in uploads)
    assert {len(set(u["rows"][0]) & ID_COLUMNS) for u in uploads} == {1}
    by_id = {row.get("ClientId") or row["PurchaseId"]: row for row in rows}
    for doc in docs:
        stored = by_id[doc.get("ClientId") or doc["PurchaseId"]]
        assert stored["Target"] == "order_paid" and stored["Price"] == doc["Price"] and stored["Currency"] == "RUB"
        assert stored["DateTime"] == str(doc["DateTime"]) and str(stored["counter"]) == str(doc["counter_id"])
    assert any("PurchaseId" in u["rows"][0] for u in uploads)


def test_a_call_that_converts_later_takes_its_counter_and_identifier(runtime: Runtime) -> None:
    call = make_call(303, 7, provider="twilio", call_id="CA" + "7" * 32)
    runtime.producer.submit([call])
    drain(runtime, seal_all=True)
    ref = find_call(runtime, "twilio", "CA" + "7" * 32)
    assert ref is not None and (ref.counter_id, ref.id_column, ref.identifier) == (303, "ClientId", call["ClientId"])
    result = record_conversion(
        runtime, "twilio", "CA" + "7" * 32, target="deal_won", date_time=int(datetime.now(UTC).timestamp()) - 5,
        price="990.00", currency="RUB",
    )  # fmt: skip
    assert len(result.accepted) == 1
    (batch_id,) = drain(runtime, seal_all=True).sealed
    assert runtime.redis.hget(runtime.keys.batch(batch_id), "bucket") == "303:conversions:CLIENT_ID"
    unknown = record_conversion(runtime, "twilio", "CA-unknown", target="deal_won", date_time=1)
    assert not unknown.accepted and unknown.rejected[0].errors[0].field == "call_id"


@pytest.mark.parametrize(
    ("column", "identifier", "stored"),
    [
        ("ClientId", "1556018960123456789", "c|btl6oq06ias5"),  # digits: base 36, lowercase letter
        ("Yclid", "7000000000000001", "y|1wxajltct8h"),
        ("UserId", "user-1|x", "U|user-1|x"),  # not digits: kept as sent
        ("ClientId", "0123", "C|0123"),  # a leading zero would be lost in base 36
    ],
)
def test_call_ref_values_are_compact_and_read_back_exactly(column: str, identifier: str, stored: str) -> None:
    value = call_ref_value(303, column, identifier)
    assert value == f"303|{stored}"
    assert parse_call_ref(value) == (303, column, identifier)
    assert parse_call_ref("303|C|1556018960123456789") == (303, "ClientId", "1556018960123456789")  # as before


def test_call_ref_base36_and_digests_match_the_standard_library() -> None:
    # base 36 two digits a division and base64 by binascii (issue 26): the same text as int(x, 36) reads
    # and as urlsafe_b64encode wrote before.
    for number in [*range(2_000), *(36**k + d for k in range(1, 14) for d in (-1, 0, 1)), 10**19 + 7, 2**64 - 1]:
        text = _to_base36(number)
        assert int(text, 36) == number
        assert text == "0" or not text.startswith("0")
    for source in ("", "1\x1ftwilio\x1fCA1", "é" * 40, "x" * 1_000):
        digest = hashlib.blake2b(source.encode(), digest_size=12).digest()
        assert dedup_digest(source) == base64.urlsafe_b64encode(digest).decode()
    assert call_ref_digest("p", "1") == dedup_digest("ref\x1fp\x1f1")


def test_marks_name_their_batch_by_number_and_old_marks_still_resolve(runtime: Runtime) -> None:
    call = make_call(303, 8, provider="twilio", call_id="CA" + "8" * 32)
    runtime.producer.submit([call])
    (batch_id,) = drain(runtime, seal_all=True).sealed
    ref = find_call(runtime, "twilio", "CA" + "8" * 32)
    assert ref is not None and ref.seq is not None and "R" not in ref.seq  # the nonce is kept per batch
    tail = batch_id.split("B", 1)[1]
    assert batch_tail(runtime, ref.shard, ref.seq) == tail
    mark = locate(runtime, provider="twilio", call_id="CA" + "8" * 32)
    assert mark is not None and mark.seq == tail
    assert batch_tail(runtime, ref.shard, tail) == tail  # a mark of before the compaction names it whole
    assert batch_tail(runtime, ref.shard, "999999") is None  # no nonce kept: not guessed


def test_conversion_endpoints_over_http(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(ingest_counters=[101])
    rt = Runtime(settings)
    rt.producer.submit([make_call(404, 1, provider="zadarma", call_id="in_1.1")])
    drain(rt, seal_all=True)
    with running_ingest(settings) as base, httpx.Client(base_url=base) as http:
        one = http.post("/v1/conversions", json=conversion(1))
        assert one.status_code == 200 and one.json() == {"status": "accepted", "conversion_id": "order-1"}
        bad = http.post("/v1/conversions", json=conversion(2, DateTime=int(datetime.now(UTC).timestamp()) + 600))
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "DateTime"
        body = b"\n".join(
            [
                httpx.Request("POST", "/", json=conversion(3)).read(),
                b"{not json",
                httpx.Request("POST", "/", json=conversion(4, Target="")).read(),
            ]
        )
        bulk = http.post("/v1/conversions/bulk", content=body).json()
        assert (bulk["accepted"], bulk["rejected"]) == (1, 2)
        assert [line["status"] for line in bulk["lines"]] == ["accepted", "rejected", "rejected"]
        assert bulk["lines"][2]["errors"][0]["field"] == "Target"
        later = http.post(
            "/v1/calls/zadarma/in_1.1/conversions",
            json={"Target": "deal_won", "DateTime": int(datetime.now(UTC).timestamp()) - 10, "Price": "10.00"},
        )
        assert later.status_code == 200
        missing = http.post("/v1/calls/zadarma/nope/conversions", json={"Target": "x", "DateTime": 1})
        assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "call_id"
        extra = http.post("/v1/calls/zadarma/in_1.1/conversions", json={"Target": "x", "DateTime": 1, "Colour": 1})
        assert extra.status_code == 422 and extra.json()["errors"][0]["field"] == "Colour"
    result = drain(rt, seal_all=True)
    assert result.read == 3  # order-1, order-3 and the call's conversion; nothing of the refused ones
    rt.close()


def test_crm_csv_import_with_a_column_mapping(runtime: Runtime, tmp_path: Path) -> None:
    export = tmp_path / "deals.csv"
    export.write_text(
        "deal;ym_uid;closed;amount;cur\n"
        "D-1;1700000000000000001;2026-11-28 10:00:00;1500.00;RUB\n"
        "D-2;;2026-11-28 11:00:00;10;RUB\n"
        "D-3;1700000000000000003;2026-11-28T11:30:00+03:00;7.5;USD\n"
        "D-4;1700000000000000004;tomorrow;1;RUB\n",
        encoding="utf-8",
    )
    mapping = ColumnMap.parse(
        ["conversion_id=deal", "ClientId=ym_uid", "DateTime=closed", "Price=amount", "Currency=cur"],
        ["Target=deal_won", "counter_id=101"],
        timezone="Europe/Moscow",
    )
    report = import_file(runtime.producer, export, mapping, delimiter=";")
    assert report.accepted == 2
    assert [(line, errors[0].field) for line, errors in report.rejected] == [
        (3, "ClientId|UserId|Yclid|PurchaseId"),
        (5, "DateTime"),
    ]
    sealed = drain(runtime, seal_all=True).sealed
    rows = [r for b in sealed for r in stored_rows(runtime, b)]
    moscow_ten = int(datetime(2026, 11, 28, 7, 0, tzinfo=UTC).timestamp())
    assert any(r["DateTime"] == str(moscow_ten) for r in rows)
    again = import_file(runtime.producer, export, mapping, delimiter=";")
    assert again.accepted == 2 and drain(runtime, seal_all=True).repeats == 2  # nothing stored twice
    with pytest.raises(MappingError):
        ColumnMap.parse(["ClientId=ym_uid"], [])  # no conversion_id column
    with pytest.raises(MappingError):
        mapping.check_header(["deal"])


def test_ctl_conversions_import_and_for_call(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    export = tmp_path / "orders.csv"
    export.write_text("id,cid,at\nO-1,1700000000000000001,1795000000\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(
        ctl_main,
        ["conversions", "import", str(export), "--map", "conversion_id=id", "--map", "ClientId=cid",
         "--map", "DateTime=at", "--set", "Target=paid", "--set", "counter_id=101", "--json"],
        obj=Context(settings),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert '"accepted": 1' in result.output
    bad = runner.invoke(ctl_main, ["conversions", "import", str(export), "--map", "Colour=id"], obj=Context(settings))
    assert bad.exit_code != 0 and "not a conversion field" in bad.output
    unknown = runner.invoke(
        ctl_main, ["conversions", "for-call", "twilio", "CA-x", "--target", "t", "--at", "1"], obj=Context(settings)
    )
    assert unknown.exit_code != 0 and "call_id" in unknown.output
