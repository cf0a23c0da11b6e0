"""The ingestion service over HTTP against a real Redis: every provider, signatures, answers, held calls."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterator
from datetime import datetime
from email.utils import formatdate
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson
import pytest
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from config.settings import Settings
from ingest.signatures import mango_sign, zadarma_signature
from tests.ingest_helpers import (
    DYNAMIC,
    MANGO_KEY,
    MANGO_SALT,
    OUTGOING,
    STATIC,
    TWILIO_SID,
    TWILIO_TOKEN,
    ZADARMA_SECRET,
    held_calls,
    ingest_settings,
    recent,
    service,
    snapshot,
    stored_rows,
)
from worker.runtime import Runtime

FORM = {"content-type": "application/x-www-form-urlencoded"}
TWILIO_URL = "http://testserver/twilio/voice"


@pytest.fixture
def svc(make_settings: Callable[..., Settings]) -> Iterator[tuple[TestClient, Runtime]]:
    with service(ingest_settings(make_settings)) as pair:
        yield pair


# --- Twilio ------------------------------------------------------------------------------------
def twilio_form(call_sid: str = "CA" + "1" * 32, status: str = "completed", **extra: str) -> dict[str, str]:
    form = {
        "AccountSid": TWILIO_SID,
        "CallSid": call_sid,
        "From": "+79161234567",
        "To": STATIC,
        "CallStatus": status,
        "Direction": "inbound",
        "CallDuration": "95",
        "Timestamp": formatdate(recent(), usegmt=True).replace("GMT", "+0000"),
        "CallbackSource": "call-progress-events",
        "SequenceNumber": "3",
    }
    form.update(extra)
    return form


def post_twilio(client: TestClient, form: dict[str, str], *, url: str = TWILIO_URL, token: str = TWILIO_TOKEN,
                signature: str | None = None, path: str = "/twilio/voice") -> int:  # fmt: skip
    headers = dict(FORM)
    headers["X-Twilio-Signature"] = (
        signature if signature is not None else RequestValidator(token).compute_signature(url, form)
    )
    if signature == "":
        del headers["X-Twilio-Signature"]
    return int(client.post(path, content=urlencode(form), headers=headers).status_code)


def test_twilio_final_status_becomes_one_answered_call(svc: tuple[TestClient, Runtime]) -> None:
    client, rt = svc
    form = twilio_form(SipHeader_X_Client_Id="x")
    form["SipHeader_X-Client-Id"] = "1556018960123456789"
    assert post_twilio(client, form) == 200
    assert post_twilio(client, form) == 200  # repeated callback: same CallSid, dropped downstream
    rows = stored_rows(rt)
    assert len(rows) == 2 and rows[0]["_digest"] == rows[1]["_digest"]
    row = rows[0]
    assert row["ClientId"] == "1556018960123456789" and row["_bucket"] == "101:calls:CLIENT_ID"
    assert row["CallMissed"] == "0" and row["TalkDuration"] == "95" and row["StaticCall"] == "1"
    assert row["PhoneNumber"] == "+79161234567" and row["FirstTimeCaller"] == "1"
    assert row["CallTrackerURL"].endswith("/CA" + "1" * 32) and "HoldDuration" not in row


def test_twilio_non_final_and_out_of_order_callbacks_store_nothing(svc: tuple[TestClient, Runtime]) -> None:
    client, rt = svc
    sid = "CA" + "2" * 32
    before = snapshot(rt)
    for status in ("queued", "ringing", "in-progress"):
        assert post_twilio(client, twilio_form(sid, status)) == 200
    assert post_twilio(client, twilio_form(sid, "no-answer", CallDuration="0")) == 200
    assert post_twilio(client, twilio_form(sid, "ringing")) == 200  # late, out of order
    assert post_twilio(client, twilio_form("CA" + "3" * 32, ParentCallSid=sid)) == 200  # child leg
    assert stored_rows(rt) == []
    held = held_calls(rt)
    assert [(reason, call["call_id"], call["answered"]) for reason, call in held] == [("no_identifier", sid, False)]
    assert snapshot(rt) != before


def test_twilio_dial_action_decides_answered(svc: tuple[TestClient, Runtime]) -> None:
    client, rt = svc
    form = twilio_form("CA" + "4" * 32, "in-progress", DialCallStatus="busy", DialCallDuration="0")
    form["SipHeader_X-Client-Id"] = "77"
    assert post_twilio(client, form) == 200
    (row,) = stored_rows(rt)
    assert row["CallMissed"] == "1" and row["TalkDuration"] == "0"


@pytest.mark.parametrize("case", ["wrong token", "no signature", "replayed body, other signature", "other url"])
def test_twilio_refuses_bad_signatures_and_stores_nothing(svc: tuple[TestClient, Runtime], case: str) -> None:
    client, rt = svc
    form = twilio_form()
    form["SipHeader_X-Client-Id"] = "55"
    before = snapshot(rt)
    if case == "wrong token":
        status = post_twilio(client, form, token="not-the-token")
    elif case == "no signature":
        status = post_twilio(client, form, signature="")
    elif case == "other url":
        status = post_twilio(client, form, url="http://testserver/elsewhere")
    else:
        other = RequestValidator(TWILIO_TOKEN).compute_signature(TWILIO_URL, twilio_form("CA" + "9" * 32))
        status = post_twilio(client, form, signature=other)
    assert status in (401, 403)
    assert snapshot(rt) == before


def test_twilio_behind_a_proxy_accepts_the_public_url_with_and_without_port(
    make_settings: Callable[..., Settings],
) -> None:
    settings = ingest_settings(make_settings, ingest_public_url="https://calls.example.com")
    with service(settings) as (client, rt):
        for n, url in enumerate(
            ("https://calls.example.com/twilio/voice", "https://calls.example.com:443/twilio/voice")
        ):
            form = twilio_form(f"CA{n}" + "5" * 31)
            form["SipHeader_X-Client-Id"] = "9"
            assert post_twilio(client, form, url=url) == 200
        assert post_twilio(client, twilio_form("CA" + "6" * 32), url=TWILIO_URL) == 403
        assert len(stored_rows(rt)) == 2


def test_reference_sample_of_twilio() -> None:
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}  # fmt: skip
    from ingest.signatures import twilio_signature, twilio_valid

    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params.items()) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert RequestValidator("12345").compute_signature(url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert twilio_valid("12345", [url], list(params.items()), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not twilio_valid("12346", [url], list(params.items()), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")


# --- Zadarma -----------------------------------------------------------------------------------
def zadarma_form(call_id: str = "in_1715690231.1", **extra: str) -> dict[str, str]:
    form = {
        "event": "NOTIFY_END",
        "call_start": "2099-01-01 00:00:00",
        "pbx_call_id": call_id,
        "caller_id": "79161234567",
        "called_did": DYNAMIC.lstrip("+"),
        "duration": "42",
        "disposition": "answered",
        "status_code": "16",
        "is_recorded": "0",
        "client_id": "1234567",
    }
    from datetime import datetime
    from zoneinfo import ZoneInfo

    form["call_start"] = datetime.fromtimestamp(recent(), ZoneInfo("Europe/Moscow")).strftime("%Y-%m-%d %H:%M:%S")
    form.update(extra)
    return form


def zadarma_sign(form: dict[str, str], secret: str = ZADARMA_SECRET) -> str:
    if form["event"].startswith("NOTIFY_OUT"):
        text = form["internal"] + form["destination"] + form["call_start"]
    else:
        text = form["caller_id"] + form["called_did"] + form["call_start"]
    # The documented algorithm, written out: base64 of the hex HMAC-SHA1.
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha1).hexdigest().encode()).decode()


def test_reference_sample_of_zadarma() -> None:
    text = "+79161234567" + "74951234567" + "2024-05-14 13:37:11"
    expected = "MjliOTAzZTZjNjA5ZTg2YzM1MzYwNTkxOWMyZTY1MDY5OThkODJiZg=="
    assert zadarma_signature("secret", text) == expected


def test_zadarma_echo_and_notify_end(svc: tuple[TestClient, Runtime]) -> None:
    client, rt = svc
    echo = client.get("/zadarma/main", params={"zd_echo": "abc123"})
    assert echo.status_code == 200 and echo.text == "abc123"
    assert client.get("/zadarma/other", params={"zd_echo": "x"}).status_code == 404
    # Zadarma signs no visitor id: the call is credited to the session that held the dynamic number.
    shown = client.get("/v1/number", params={"counter": 202, "ClientId": "1234567"}).json()
    assert shown["number"] == DYNAMIC
    now = datetime.now(ZoneInfo("Europe/Moscow")).strftime("%Y-%m-%d %H:%M:%S")
    form = zadarma_form(call_start=now)
    answer = client.post("/zadarma/main", content=urlencode(form), headers={**FORM, "Signature": zadarma_sign(form)})
    assert answer.status_code == 200, answer.text
    (row,) = stored_rows(rt)
    assert row["_bucket"] == "202:calls:CLIENT_ID" and row["StaticCall"] == "0" and row["ClientId"] == "1234567"
    assert row["TalkDuration"] == "42" and row["CallMissed"] == "0" and row["PhoneNumber"] == "+79161234567"


def test_zadarma_outgoing_only_where_enabled(svc: tuple[TestClient, Runtime]) -> None:
    client, rt = svc
    for n, number in enumerate((STATIC, OUTGOING)):
        form = zadarma_form(f"out_{n}", event="NOTIFY_OUT_END", internal="100", destination="79169998877")
        form["caller_id"] = number
        del form["called_did"]
        r = client.post("/zadarma/main", content=urlencode(form), headers={**FORM, "Signature": zadarma_sign(form)})
        assert r.status_code == 200 and r.json()["status"] == ("ignored" if number == STATIC else "held")
    # Routed to counter 303, but Zadarma signs no visitor id: held until one is given (ctl held replay).
    ((reason, call),) = held_calls(rt)
    assert reason == "no_identifier" and call["caller"] == "+79169998877"


@pytest.mark.parametrize("case", ["wrong secret", "no signature", "replayed body, other signature"])
def test_zadarma_refuses_bad_signatures(svc: tuple[TestClient, Runtime], case: str) -> None:
    client, rt = svc
    form = zadarma_form()
    headers = dict(FORM)
    if case == "wrong secret":
        headers["Signature"] = zadarma_sign(form, "nope")
    elif case == "replayed body, other signature":
        headers["Signature"] = zadarma_sign(zadarma_form(caller_id="79160000000"))
    before = snapshot(rt)
    assert client.post("/zadarma/main", content=urlencode(form), headers=headers).status_code in (401, 403)
    assert snapshot(rt) == before


# --- Mango Office ------------------------------------------------------------------------------
def mango_summary(entry_id: str = "MjkxMzY0MTc3Mjo0MDE=", **extra: object) -> str:
    created = recent()
    data: dict[str, object] = {
        "entry_id": entry_id,
        "call_direction": 1,
        "from": {"number": "79161234567"},
        "to": {"extension": "101", "number": "sip:101@vpbx"},
        "line_number": STATIC.lstrip("+"),
        "create_time": created,
        "forward_time": created + 2,
        "talk_time": created + 10,
        "end_time": created + 70,
        "entry_result": 1,
        "disconnect_reason": 1110,
        "customer": {"client_id": "31337"},
    }
    data.update(extra)
    return orjson.dumps(data).decode()


def mango_body(json_text: str, *, key: str = MANGO_KEY, salt: str = MANGO_SALT, sign: str | None = None) -> str:
    # The documented algorithm, written out: lowercase hex sha256 of key + json + salt.
    digest = hashlib.sha256((key + json_text + salt).encode()).hexdigest()
    return urlencode({"vpbx_api_key": MANGO_KEY, "sign": digest if sign is None else sign, "json": json_text})


def test_reference_sample_of_mango() -> None:
    json_text = '{"date_from":"1481630491","date_to":"1481734491"}'
    expected = "727f134b4ae7b45e71e08b2ff2d846a1cf0460119cd4a351754c5365817f8068"
    assert mango_sign(MANGO_KEY, json_text, MANGO_SALT) == expected


def test_mango_summary_ping_and_durations(svc: tuple[TestClient, Runtime]) -> None:
    client, rt = svc
    assert client.post("/mango/office/ping").status_code == 200
    r = client.post("/mango/office/events/summary", content=mango_body(mango_summary()), headers=FORM)
    assert r.status_code == 200, r.text
    missed = mango_summary("bWlzc2Vk", entry_result=0, talk_time=0)
    assert client.post("/mango/office/events/summary", content=mango_body(missed), headers=FORM).status_code == 200
    answered, missed_row = stored_rows(rt)
    assert answered["TalkDuration"] == "60" and answered["HoldDuration"] == "10" and answered["CallMissed"] == "0"
    assert answered["FirstTimeCaller"] == "1" and missed_row["FirstTimeCaller"] == "0"
    assert missed_row["CallMissed"] == "1" and missed_row["TalkDuration"] == "0" and missed_row["HoldDuration"] == "70"


@pytest.mark.parametrize("case", ["wrong salt", "no sign", "replayed body, other sign"])
def test_mango_refuses_bad_signatures(svc: tuple[TestClient, Runtime], case: str) -> None:
    client, rt = svc
    body = {
        "wrong salt": mango_body(mango_summary(), salt="other"),
        "no sign": mango_body(mango_summary(), sign=""),
        "replayed body, other sign": mango_body(
            mango_summary(), sign=mango_sign(MANGO_KEY, mango_summary("b3RoZXI="), MANGO_SALT)
        ),
    }[case]
    before = snapshot(rt)
    assert client.post("/mango/office/events/summary", content=body, headers=FORM).status_code in (401, 403)
    assert snapshot(rt) == before


# --- Generic JSON ------------------------------------------------------------------------------
def test_generic_call_derives_durations_and_names_bad_fields(svc: tuple[TestClient, Runtime]) -> None:
    client, rt = svc
    start = recent()
    call = {"call_id": "g-1", "to": STATIC, "from": "+7 916 123-45-67", "start": start,
            "answer": start + 7, "end": start + 67, "Yclid": "123456"}  # fmt: skip
    assert client.post("/v1/calls", json=call).json() == {"status": "accepted"}
    (row,) = stored_rows(rt)
    assert (row["HoldDuration"], row["TalkDuration"], row["CallMissed"]) == ("7", "60", "0")
    before = snapshot(rt)
    bad = client.post("/v1/calls", json={**call, "call_id": "g-2", "start": "yesterday", "surprise": 1})
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"start", "surprise"}
    assert client.post("/v1/calls", content=b"{not json").status_code == 400
    assert snapshot(rt) == before
    # A call older than the join window is never a 4xx (providers do not retry those): held, too_old.
    old = client.post("/v1/calls", json={"call_id": "g-3", "to": STATIC, "start": start - 30 * 86400, "ClientId": "1"})
    assert old.status_code == 200 and old.json() == {"status": "held", "reason": "too_old"}
    assert [reason for reason, _ in held_calls(rt)] == ["too_old"]


def test_size_limit_is_413_and_stores_nothing(make_settings: Callable[..., Settings]) -> None:
    with service(ingest_settings(make_settings, ingest_max_body_bytes=1024, ingest_max_bulk_lines=3)) as (client, rt):
        before = snapshot(rt)
        big = {"call_id": "big", "to": STATIC, "start": recent(), "ClientId": "1", "URL": "https://x/" + "a" * 2000}
        assert client.post("/v1/calls", json=big).status_code == 413
        lines = b"\n".join(orjson.dumps({"call_id": f"l{i}", "to": STATIC, "start": recent()}) for i in range(4))
        assert client.post("/v1/calls/bulk", content=lines).status_code == 413
        assert snapshot(rt) == before


def test_bulk_reports_each_line(svc: tuple[TestClient, Runtime]) -> None:
    client, rt = svc
    start = recent()
    lines = [
        orjson.dumps({"call_id": "b-1", "to": STATIC, "start": start, "ClientId": "11"}),
        b"",
        b"{broken",
        orjson.dumps({"call_id": "b-2", "to": "+74959999999", "start": start, "ClientId": "12"}),
        orjson.dumps({"call_id": "b-3", "to": DYNAMIC, "start": start}),
        orjson.dumps({"call_id": "b-4", "to": STATIC, "start": start, "ClientId": "abc"}),
    ]
    answer = client.post("/v1/calls/bulk", content=b"\n".join(lines))
    assert answer.status_code == 200
    body = answer.json()
    assert (body["accepted"], body["held"], body["rejected"]) == (1, 2, 2)
    report = {item["line"]: item for item in body["lines"]}
    assert report[1]["status"] == "accepted" and report[3]["errors"][0]["field"] == "body"
    assert report[4] == {"line": 4, "call_id": "b-2", "status": "held", "reason": "unknown_number"}
    assert report[5]["reason"] == "no_lease" and report[6]["errors"][0]["field"] == "ClientId"
    assert 2 not in report
    assert len(stored_rows(rt)) == 1 and len(held_calls(rt)) == 2


def test_health_and_readiness(svc: tuple[TestClient, Runtime]) -> None:
    client, _ = svc
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json() == {"status": "ready"}


def test_redis_down_answers_503(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings)
    with service(settings) as (client, _rt):
        service_obj = client.app.state.service  # type: ignore[attr-defined]
        from worker.intake.service import build_intake

        down = Runtime(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
        service_obj.runtime, service_obj.intake = down, build_intake(down)
        call = {"call_id": "d-1", "to": STATIC, "start": recent(), "ClientId": "1"}
        assert client.post("/v1/calls", json=call).status_code == 503
        assert client.get("/readyz").status_code == 503
        down.close()
