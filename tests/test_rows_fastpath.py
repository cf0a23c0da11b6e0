"""The fused path of worker/delivery/rows.py stores the very rows, and rejects with the very errors, of
the model path (validate_*, ``to_row``, ``encode_row``) it replaces, for a varied sample of calls,
conversions and chats."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.load import make_call
from worker.delivery.csvfile import encode_row
from worker.delivery.fastrows import FastCheck
from worker.delivery.rows import prepare
from worker.model.calls import validate_calls
from worker.model.chats import validate_chats
from worker.model.conversions import validate_conversions
from worker.model.fields import TimePolicy
from worker.model.kinds import UploadKind
from worker.model.phones import PhoneRegions

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
POLICY = TimePolicy(timedelta(days=21), timedelta(seconds=300))
LATE_STATIC = TimePolicy(timedelta(days=21), timedelta(seconds=300), late_static=True)
REGIONS = PhoneRegions(default="RU", per_counter={77: "DE"})

# Per column: values the model accepts and values it refuses or changes (strips, converts, reads otherwise).
CALL_VALUES: dict[str, list[Any]] = {
    "counter_id": [1, 77, 2**63 - 1, 2**63, 0, -5, "12", True, 1.0, None],
    "call_id": ["c-1", "x" * 128, "x" * 129, " c-2", "c 3", "", 7, "зв", None],
    "provider": ["twilio", "a_b-c", "Twilio", "", "x" * 33, " api", None, 1],
    "ClientId": ["1556018960000000001", "12", "", " 12", "12a", 12, "1" * 65, None, "٣"],
    "UserId": ["user-1", "a,b", 'say "hi"', "x" * 256, "x" * 257, "a\nb", " u", "", "u\u2028", 5, None],
    "Yclid": ["123456789", "", "x", 9, None],
    "DateTime": [
        T - 600,
        T - 86_400 * 30,
        T + 200,
        T + 3_600,
        -1,
        2**40,
        "1764590000",
        f"{T - 60}",
        True,
        float(T - 60),
        "2026-12-01T11:00:00+03:00",
        "2026-12-01T11:00:00",
        "soon",
        None,
    ],
    "Price": [0, 1500, "1500.50", "007.50", "1.", ".5", "-1", -1, 1.5, True, "1" * 19, 10**18, "", " 1", "1e3", None],
    "Currency": ["RUB", "usd", "XXX?", "", " RUB", 1, None],
    "StaticCall": [0, 1, True, False, 2, "1", "true", 1.0, None],
    "PhoneNumber": [
        "+79123456789",
        "+78121234567",
        "+390612345678",
        "+7912",
        "8 (912) 345-67-89",
        "9123456789",
        "030 1234567",
        "+1 415 555 2671",
        "00 7 912 345 67 89",
        "anonymous",
        "",
        " +79123456789",
        79,
        None,
    ],
    "TalkDuration": [0, 125, 604_800, 604_801, -1, "12", 1.0, 1.5, True, None],
    "HoldDuration": [0, 30, "x", None],
    "CallMissed": [0, 1, False, "0", 3, None],
    "Tag": ["sale", "a,b", 'q"q', "x" * 1000, "x" * 1001, "line\nbreak", " t", "", "é", 5, None],
    "FirstTimeCaller": [0, 1, True, "1", 5, None],
    "URL": [
        "https://shop.example/p?a=1,b",
        "http://x",
        "ftp://x",
        "https://a b",
        "",
        "https://x/" + "a" * 2040,
        " https://x",
        None,
    ],
    "CallTrackerURL": ["https://tracker.example/r/1", "tracker", None],
    "client_id": ["42"],
    "Unknown": [1],
}


CONVERSION_VALUES: dict[str, list[Any]] = {
    "counter_id": [5, 0, "5", None],
    "conversion_id": ["o-1", " o", "", None, 3],
    "source": ["crm", "CRM", "", None],
    "ClientId": ["123", "", "1a", None],
    "UserId": ["u,1", "u\n", " u", None],
    "Yclid": ["77", "x", None],
    "PurchaseId": ["p,1", 'p"2', "x" * 257, "", None],
    "Target": ["paid", "a.b-c_d", "bad target", "", "x" * 256, " paid", 5, None],
    "DateTime": [T - 60, T, T + 10, T - 10**8, f"{T - 60}", 1.5, None],
    "Price": ["1.5", "0", 12, -1, 1.5, "1.", None],
    "Currency": ["RUB", "eur", "x", "", None],
    "purchase_id": ["p"],
}


CHAT_VALUES: dict[str, list[Any]] = {
    "counter_id": [5, 0, None],
    "chat_id": ["ch-1", "", " c", None],
    "source": ["jivo", "Jivo", None],
    "DateTime": [T - 60, T + 200, T + 3_600, T - 10**8, "2026-12-01T11:00:00Z", None],
    "ChatPlatform": ["telegram", "Viber", "WHATSAPP", "icq", " viber", "", 3, None],
    "ChatUsername": ["ann", "", "a,b", "x" * 257, "a\nb", None],
    "ChatUserID": ["u-1", 'q"q', " u", None],
    "PhoneNumber": ["+79123456789", "89123456789", "12", "", " +7912", None],
    "ClientID": ["42", "x", "", None],
    "ClientId": ["43"],
    "UserID": ['u"1', "u,2", None],
    "UserId": ["u3"],
    "Yclid": ["77", "y"],
    "YCLID": ["78"],
    "PurchaseID": ["p-1", "p" * 257],
    "PurchaseId": ["p-2"],
    "Answered": [0, 1, True, "1", 5, None],
    "Tag": ["a,b", "x\ny", "x" * 1001, "", None],
    "platform": ["telegram"],
}


def _mutated(rnd: random.Random, base: dict[str, Any], values: dict[str, list[Any]]) -> dict[str, Any]:
    record = dict(base)
    for column in rnd.sample(sorted(values), rnd.randint(1, 4)):
        value = rnd.choice([*values[column], "<absent>"])
        if value == "<absent>":
            record.pop(column, None)
        else:
            record[column] = value
    return record


def _base_call(n: int) -> dict[str, Any]:
    return make_call("r", n, 7, T, counter_base=100)  # the benchmark's calls


def _calls() -> list[Any]:
    rnd = random.Random(2026)
    sample: list[Any] = [_base_call(n) for n in range(50)]
    sample += [_mutated(rnd, _base_call(n), CALL_VALUES) for n in range(3_000)]
    sample += [None, [], "call", {"counter_id": 1}]
    return sample


def _old_rows(event: Any) -> tuple[str, str]:
    """The stored row as the producer built it before issue 26: with and without FirstTimeCaller."""
    bucket = event.bucket
    cells = event.to_row()
    with_first = encode_row(bucket.spec, bucket.id_type, cells)
    cells.pop("FirstTimeCaller", None)
    return with_first, encode_row(bucket.spec, bucket.id_type, cells)


def _assert_same(kind: UploadKind, sample: list[Any], old: Any, policy: TimePolicy = POLICY) -> None:
    prepared, rejected = prepare(sample, kind, NOW, policy, REGIONS)
    accepted, old_rejected = old(sample)
    assert [(r.index, r.errors) for r in rejected] == [(r.index, r.errors) for r in old_rejected]
    assert len(prepared) == len(accepted)
    for item, (index, event) in zip(prepared, accepted, strict=True):
        assert item.index == index
        assert (item.row(False), item.row(True)) == _old_rows(event), sample[index]
        assert item.bucket == event.bucket.encode()
        assert item.dedup_source == event.dedup_source
        assert item.source_id == event.source_id
        if kind is UploadKind.CALLS:
            assert item.call_ref == (event.provider, event.call_id, event.id_type.column, event.identifier)
    # Each one alone gives the same answer as within the chunk.
    for index in range(0, len(sample), 37):
        alone, alone_rejected = prepare([sample[index]], kind, NOW, policy, REGIONS)
        within = [p.row(False) for p in prepared if p.index == index]
        assert [p.row(False) for p in alone] == within
        assert [r.errors for r in alone_rejected] == [r.errors for r in rejected if r.index == index]


def test_calls_fused_path_stores_the_same_rows_and_errors() -> None:
    sample = _calls()
    _assert_same(UploadKind.CALLS, sample, lambda events: validate_calls(events, NOW, POLICY, REGIONS))
    check = FastCheck(NOW, POLICY, REGIONS)
    fast = sum(check.call(i, raw) is not None for i, raw in enumerate(sample) if type(raw) is dict)
    accepted, rejected = validate_calls(sample, NOW, POLICY, REGIONS)
    assert fast >= len(accepted) // 2  # the fast path does take most valid calls
    assert len(rejected) > 1_000  # and the sample holds plenty of refused ones


def test_late_static_calls_take_the_same_path() -> None:
    old = T - 86_400 * 30
    sample = [{**_base_call(n), "DateTime": old, "StaticCall": n % 3 or None} for n in range(30)]
    _assert_same(UploadKind.CALLS, sample, lambda e: validate_calls(e, NOW, LATE_STATIC, REGIONS), LATE_STATIC)
    prepared, rejected = prepare(sample, UploadKind.CALLS, NOW, LATE_STATIC, REGIONS)
    assert prepared and rejected


def test_conversions_fused_path_stores_the_same_rows_and_errors() -> None:
    rnd = random.Random(11)
    base = {"counter_id": 5, "conversion_id": "o-0", "ClientId": "123", "Target": "paid", "DateTime": T - 60}
    sample: list[Any] = [{**base, "conversion_id": f"o-{n}", "Price": n, "Currency": "RUB"} for n in range(20)]
    sample += [_mutated(rnd, {**base, "conversion_id": f"o-{n}"}, CONVERSION_VALUES) for n in range(2_000)]
    _assert_same(UploadKind.CONVERSIONS, sample, lambda e: validate_conversions(e, NOW, POLICY))
    check = FastCheck(NOW, POLICY, REGIONS)
    fast = sum(check.conversion(i, raw) is not None for i, raw in enumerate(sample))
    accepted, rejected = validate_conversions(sample, NOW, POLICY)
    assert fast >= len(accepted) // 2
    assert len(rejected) > 500


def test_chats_fused_path_stores_the_same_rows_and_errors() -> None:
    rnd = random.Random(13)
    base = {"counter_id": 5, "chat_id": "ch-0", "DateTime": T - 60, "ChatPlatform": "telegram", "ChatUsername": "ann"}
    sample: list[Any] = [{**base, "chat_id": f"ch-{n}", "PhoneNumber": f"+7912{n:07d}"} for n in range(20)]
    sample += [_mutated(rnd, {**base, "chat_id": f"ch-{n}"}, CHAT_VALUES) for n in range(2_000)]
    _assert_same(UploadKind.CHATS, sample, lambda e: validate_chats(e, NOW, POLICY, REGIONS))
    check = FastCheck(NOW, POLICY, REGIONS)
    fast = sum(check.chat(i, raw) is not None for i, raw in enumerate(sample))
    accepted, rejected = validate_chats(sample, NOW, POLICY, REGIONS)
    assert fast >= len(accepted) // 2
    assert len(rejected) > 500


def test_conversions_and_chats_store_the_same_rows_and_errors() -> None:
    rnd = random.Random(7)
    conversions: list[Any] = []
    chats: list[Any] = []
    for n in range(400):
        conversion = {
            "counter_id": 5,
            "conversion_id": f"o-{n}",
            "ClientId": "123",
            "Target": "paid",
            "DateTime": T - 60,
        }
        chat = {
            "counter_id": 5,
            "chat_id": f"ch-{n}",
            "DateTime": T - 60,
            "ChatPlatform": "telegram",
            "ChatUsername": "ann",
        }
        extras: tuple[tuple[dict[str, Any], dict[str, list[Any]]], ...] = (
            (
                conversion,
                {
                    "Price": ["1.5", -1],
                    "Currency": ["RUB", "x"],
                    "Target": ["bad target", "ok"],
                    "PurchaseId": ["p,1", None],
                    "DateTime": [T + 10, T - 10**8],
                    "ClientId": ["", "1a"],
                },
            ),
            (
                chat,
                {
                    "ChatPlatform": ["Viber", "icq"],
                    "PhoneNumber": ["+79123456789", "12"],
                    "Tag": ["a,b", "x\ny"],
                    "ClientID": ["42", "x"],
                    "UserID": ['u"1'],
                    "Answered": [1, 5],
                    "ChatUsername": [None, ""],
                },
            ),
        )
        for record, extra in extras:
            for column in rnd.sample(sorted(extra), rnd.randint(0, 2)):
                record[column] = rnd.choice(extra[column])
        conversions.append(conversion)
        chats.append(chat)
    _assert_same(UploadKind.CONVERSIONS, conversions, lambda e: validate_conversions(e, NOW, POLICY))
    _assert_same(UploadKind.CHATS, chats, lambda e: validate_chats(e, NOW, POLICY, REGIONS))
