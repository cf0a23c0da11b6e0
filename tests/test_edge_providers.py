"""Provider webhooks under attack over real HTTP (uvicorn) and real Redis: a replayed Zadarma signature
with changed unsigned fields, Zadarma's source allowlist, Twilio Webhook Rule signatures."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx
from pydantic import SecretStr

from config.settings import Settings
from ingest.signatures import twilio_signature, zadarma_signature
from tests.helpers import stored_rows
from tests.ingest_helpers import DYNAMIC, STATIC, TWILIO_SID, ZADARMA_SECRET, add_routes, ingest_settings, recent
from tests.pipeline import running_ingest
from worker.delivery.drain import drain
from worker.runtime import Runtime

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
RULE_KEY = "webhook-rule-shared-key-0123456789"


def zadarma_form(**changes: str) -> dict[str, str]:
    form = {
        "event": "NOTIFY_END",
        "call_start": datetime.now(ZoneInfo("Europe/Moscow")).strftime("%Y-%m-%d %H:%M:%S"),
        "pbx_call_id": "in_1715690231.1",
        "caller_id": "79161234567",
        "called_did": DYNAMIC.lstrip("+"),
        "duration": "42",
        "disposition": "answered",
    }
    return {**form, **changes}


def signed(form: dict[str, str]) -> dict[str, str]:
    text = form["caller_id"] + form["called_did"] + form["call_start"]
    return {**FORM, "Signature": zadarma_signature(ZADARMA_SECRET, text)}


def batch_rows(rt: Runtime) -> list[dict[str, str]]:
    rows = []
    for batch_id in drain(rt, seal_all=True).sealed:
        rows += stored_rows(rt, batch_id)
    return rows


def test_a_replayed_zadarma_signature_with_changed_unsigned_fields_stores_nothing_new(
    make_settings: Callable[..., Settings],
) -> None:
    settings = ingest_settings(make_settings)
    rt = Runtime(settings)
    add_routes(rt)
    try:
        with running_ingest(settings) as base, httpx.Client(base_url=base) as http:
            visitor = http.get("/v1/number", params={"counter": 202, "ClientId": "1111"}).json()
            assert visitor["number"] == DYNAMIC
            original = zadarma_form()
            assert http.post("/zadarma/main", content=urlencode(original), headers=signed(original)).status_code == 200
            forgeries = [
                {"pbx_call_id": "in_9999999999.9", "duration": "3600"},
                {"pbx_call_id": "in_8888888888.8", "disposition": "busy", "client_id": "2222", "ClientId": "2222"},
                {"duration": "1", "status_code": "16", "Yclid": "12345", "UserId": "mallory"},
            ]
            for changes in forgeries:
                forged = {**original, **changes}
                answer = http.post("/zadarma/main", content=urlencode(forged), headers=signed(original))
                assert answer.status_code == 200  # signed: taken, and recognised as the same call
        rows = batch_rows(rt)
        assert len(rows) == 1, rows
        (row,) = rows
        assert row["TalkDuration"] == "42" and row["ClientId"] == "1111" and "UserId" not in row
    finally:
        rt.close()


def test_a_zadarma_signature_re_split_between_caller_and_number_is_the_same_call(
    make_settings: Callable[..., Settings],
) -> None:
    """Zadarma signs caller_id + called_did + call_start joined without a separator: moving a digit from
    the caller to the number keeps the signature. Before issue 22 that made a second call id (a doubled
    call); the id is now a digest of the exact signed string, so the re-split is a repeat."""
    settings = ingest_settings(make_settings)
    rt = Runtime(settings)
    add_routes(rt)
    try:
        with running_ingest(settings) as base, httpx.Client(base_url=base) as http:
            visitor = http.get("/v1/number", params={"counter": 202, "ClientId": "1111"}).json()
            assert visitor["number"] == DYNAMIC
            # "+7 495 111-00-02" and "7 495 111-00-02" are the same number; the caller keeps its digits.
            original = zadarma_form(caller_id="79161234567", called_did="+74951110002")
            resplit = zadarma_form(caller_id="79161234567+", called_did="74951110002",
                                   call_start=original["call_start"])  # fmt: skip
            assert signed(original) == signed(resplit)  # the same signed string: the same signature
            for form in (original, resplit):
                answer = http.post("/zadarma/main", content=urlencode(form), headers=signed(original))
                assert answer.status_code == 200, answer.text
        rows = batch_rows(rt)
        assert len(rows) == 1, rows
    finally:
        rt.close()


def test_zadarma_source_allowlist(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings, zadarma_allowed_sources=["185.45.152.0/24"])
    rt = Runtime(settings)
    add_routes(rt)
    try:
        with running_ingest(settings) as base, httpx.Client(base_url=base) as http:
            form = zadarma_form()
            answer = http.post("/zadarma/main", content=urlencode(form), headers=signed(form))
            assert answer.status_code == 403 and "ZADARMA_ALLOWED_SOURCES" in answer.text
        assert batch_rows(rt) == []
    finally:
        rt.close()


def twilio_rule_request(base: str, key: str) -> tuple[str, dict[str, str], dict[str, str]]:
    form = {"AccountSid": TWILIO_SID, "CallSid": "CA" + "7" * 32, "CallStatus": "completed", "CallDuration": "30",
            "Direction": "inbound", "To": STATIC, "From": "+79161234567", "Caller": "+79161234567",
            "Timestamp": datetime.fromtimestamp(recent(), ZoneInfo("UTC")).strftime("%a, %d %b %Y %H:%M:%S +0000"),
            "SipHeader_X-Client-Id": "1556018960123456789"}  # fmt: skip
    url = f"{base}/twilio/voice"
    headers = {
        **FORM,
        "X-Twilio-Signature": twilio_signature(key, url, form.items(), "HMAC_SHA256"),
        "X-Twilio-Webhooks-Signature-Settings": "key=calltrack-rule,algorithm=HMAC_SHA256",
    }
    return url, form, headers


def test_twilio_webhook_rule_signatures(make_settings: Callable[..., Settings]) -> None:
    without = ingest_settings(make_settings)
    rt = Runtime(without)
    add_routes(rt)
    try:
        with running_ingest(without) as base:
            url, form, headers = twilio_rule_request(base, RULE_KEY)
            refused = httpx.post(url, content=urlencode(form), headers=headers)
            assert refused.status_code == 403 and "CALLTRACK_TWILIO_WEBHOOK_KEYS" in refused.text
        with_key = without.model_copy(update={"twilio_webhook_keys": {"calltrack-rule": SecretStr(RULE_KEY)}})
        with running_ingest(with_key) as base:
            url, form, headers = twilio_rule_request(base, RULE_KEY)
            assert httpx.post(url, content=urlencode(form), headers=headers).status_code == 200
            _, _, forged = twilio_rule_request(base, "another-key")
            assert httpx.post(url, content=urlencode(form), headers=forged).status_code == 403
        assert len(batch_rows(rt)) == 1
    finally:
        rt.close()
