"""The call event model: each rule, its error naming the field and the rule, and the CSV row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker.model.calls import CallEvent, TimePolicy, validate_calls
from worker.model.kinds import IdType

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
POLICY = TimePolicy.from_days(21, 300)


def call(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "counter_id": 101,
        "call_id": "CA0001",
        "provider": "twilio",
        "ClientId": "1556018960123456789",
        "DateTime": int(NOW.timestamp()) - 60,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def errors_of(raw: dict[str, Any]) -> list[tuple[str, str]]:
    accepted, rejected = validate_calls([raw], NOW, POLICY)
    assert not accepted, "expected a rejection"
    return [(e.field, e.message) for e in rejected[0].errors]


def test_full_call_becomes_a_row_with_every_column() -> None:
    accepted, rejected = validate_calls(
        [
            call(
                StaticCall=0,
                Price="1500.50",
                Currency="rub",
                PhoneNumber="+7 (912) 345-67-89",
                TalkDuration=125,
                HoldDuration="7",
                CallMissed=False,
                Tag="quality:good",
                FirstTimeCaller="1",
                URL="https://shop.example/landing?utm=1",
                CallTrackerURL="https://tracker.example/calls/CA0001",
            )
        ],
        NOW,
        POLICY,
    )
    assert not rejected
    row = accepted[0][1].to_row()
    assert row == {
        "ClientId": "1556018960123456789",
        "DateTime": str(int(NOW.timestamp()) - 60),
        "StaticCall": "0",
        "Price": "1500.50",
        "Currency": "RUB",
        "PhoneNumber": "+79123456789",
        "TalkDuration": "125",
        "HoldDuration": "7",
        "CallMissed": "0",
        "Tag": "quality:good",
        "FirstTimeCaller": "1",
        "URL": "https://shop.example/landing?utm=1",
        "CallTrackerURL": "https://tracker.example/calls/CA0001",
    }


def test_identifier_precedence_and_id_type() -> None:
    event = CallEvent.model_validate(call(Yclid="123", UserId="u-1"))
    assert event.id_type is IdType.CLIENT_ID
    event = CallEvent.model_validate(call(ClientId=None, Yclid="123", UserId="u-1"))
    assert event.id_type is IdType.USER_ID and event.to_row()["UserId"] == "u-1"
    event = CallEvent.model_validate(call(ClientId=None, Yclid="8765"))
    assert event.id_type is IdType.YCLID and event.to_row()["Yclid"] == "8765"


@pytest.mark.parametrize(
    ("overrides", "field", "rule_words"),
    [
        ({"ClientId": None}, "ClientId|UserId|Yclid", "at least one"),
        ({"ClientId": "abc"}, "ClientId", "digits only"),
        ({"Yclid": "12a"}, "Yclid", "digits only"),
        ({"DateTime": None}, "DateTime", "required"),
        ({"DateTime": "2026-11-01T10:00:00"}, "DateTime", "time zone"),
        ({"DateTime": "yesterday"}, "DateTime", "Unix seconds"),
        ({"DateTime": int(NOW.timestamp()) + 3600}, "DateTime", "future"),
        ({"DateTime": int((NOW - timedelta(days=22)).timestamp())}, "DateTime", "21-day join window"),
        ({"PhoneNumber": "12-34"}, "PhoneNumber", "country code"),
        ({"PhoneNumber": "+7 912 abc"}, "PhoneNumber", "country code"),
        ({"TalkDuration": -1}, "TalkDuration", "greater than or equal to 0"),
        ({"TalkDuration": 1.5}, "TalkDuration", "whole number"),
        ({"HoldDuration": "ten"}, "HoldDuration", "whole number"),
        ({"TalkDuration": True}, "TalkDuration", "not a boolean"),
        ({"Currency": "RUR"}, "Currency", "ISO 4217"),
        ({"Currency": "rubles"}, "Currency", "ISO 4217"),
        ({"Price": "1500,50"}, "Price", "written with '.'"),
        ({"Price": -3}, "Price", "non-negative"),
        ({"StaticCall": 2}, "StaticCall", "0 or 1"),
        ({"CallMissed": "yes"}, "CallMissed", "0 or 1"),
        ({"FirstTimeCaller": 5}, "FirstTimeCaller", "0 or 1"),
        ({"URL": "javascript:alert(1)"}, "URL", "http"),
        ({"CallTrackerURL": "ftp://x"}, "CallTrackerURL", "http"),
        ({"Tag": "two\nlines"}, "Tag", "control characters"),
        ({"Tag": "red\x1b[31m"}, "Tag", "control characters"),
        ({"URL": "https://x.example/\u2028a"}, "URL", "line separators"),
        ({"UserId": "u\x85v"}, "UserId", "control characters"),
        ({"counter_id": 0}, "counter_id", "greater than 0"),
        ({"call_id": "has space"}, "call_id", "printable ASCII"),
        ({"call_id": None}, "call_id", "required"),
        ({"provider": "Twilio!"}, "provider", "lowercase"),
        ({"Colour": "red"}, "Colour", "not a known field"),
    ],
)
def test_each_rule_names_the_field_and_the_rule(overrides: dict[str, Any], field: str, rule_words: str) -> None:
    raw = call()
    for key, value in overrides.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    errors = errors_of(raw)
    assert any(f == field and rule_words in message for f, message in errors), errors


def test_small_clock_skew_is_allowed() -> None:
    accepted, rejected = validate_calls([call(DateTime=int(NOW.timestamp()) + 120)], NOW, POLICY)
    assert accepted and not rejected


def test_datetime_forms_are_normalised_to_utc() -> None:
    moscow = "2026-11-01T14:00:00+03:00"
    event = CallEvent.model_validate(call(DateTime=moscow))
    assert event.date_time == datetime(2026, 11, 1, 11, 0, tzinfo=UTC)
    assert event.to_row()["DateTime"] == str(int(event.date_time.timestamp()))


def test_phone_forms() -> None:
    assert CallEvent.model_validate(call(PhoneNumber="0044 20 7946 0958")).phone_number == "+442079460958"
    assert CallEvent.model_validate(call(PhoneNumber="79123456789")).phone_number == "+79123456789"


def test_not_a_mapping_is_rejected() -> None:
    accepted, rejected = validate_calls(["nope"], NOW, POLICY)
    assert not accepted and rejected[0].errors[0].field == "event"


def test_every_regions_example_numbers_read_the_same_from_the_cache_and_as_e164() -> None:
    """The phone cache keeps each E.164 answer as its own reading: true for every plan's examples."""
    import phonenumbers

    from worker.model import phones

    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            national = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
            e164 = phones._parse(national, region)
            assert e164 is not None, (region, national)
            assert phones._parse(e164, None) == e164, (region, national)  # what the cache assumes
            assert phones.normalize_phone(national, region) == e164
            assert phones.normalize_phone(e164, "ZZ") == e164
            checked += 1
    assert checked > 400
    assert phones.normalize_phone("8 (912) 345-67-89", "RU") == "+79123456789"
    assert phones.normalize_phone("8 (912) 345-67-89", None) is None  # another region: another entry
