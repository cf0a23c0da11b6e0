"""Fuzzing every endpoint with malformed bodies (hypothesis): never a 500, never a partial store.

Bodies for the signed endpoints are signed correctly, so the fuzzing reaches the parsers behind
the signature check; a refused request must leave Redis exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from config.settings import Settings
from ingest.signatures import twilio_signature, zadarma_signature
from tests.ingest_helpers import (
    DYNAMIC,
    MANGO_KEY,
    MANGO_SALT,
    STATIC,
    TWILIO_SID,
    TWILIO_TOKEN,
    ZADARMA_SECRET,
    ingest_settings,
    recent,
    service,
    snapshot,
)
from worker.runtime import Runtime


def dump(value: Any) -> bytes:
    return json.dumps(value).encode()  # the standard library: also integers beyond 64 bits, NaN


ALLOWED = {200, 400, 401, 403, 413, 422}
FORM = {"content-type": "application/x-www-form-urlencoded"}
FUZZ = hyp_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
numbers = st.sampled_from([STATIC, DYNAMIC, "+74950000000", "", "anonymous", "123", "+7 (495) 111-00-01"])
times = st.one_of(st.integers(-(2**40), 2**40), st.just(recent()), text, st.floats(), st.none(), st.booleans())
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text, numbers, times)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(text, c, max_size=3),
                           max_leaves=8)  # fmt: skip
GENERIC_OPTIONAL = "answer end answered talk_duration hold_duration direction from ClientId UserId Yclid URL"
GENERIC_OPTIONAL += " CallTrackerURL Price Currency Tag surprise"
generic_calls = st.fixed_dictionaries(
    {"call_id": st.one_of(text, st.just("c-1")), "to": numbers, "start": times},
    optional={k: json_values for k in GENERIC_OPTIONAL.split()},
)


@pytest.fixture
def svc(make_settings: Callable[..., Settings]) -> Iterator[tuple[TestClient, Runtime]]:
    with service(ingest_settings(make_settings)) as pair:
        yield pair


def check(client: TestClient, rt: Runtime, method: str, path: str, **kwargs: Any) -> int:
    before = snapshot(rt)
    answer = client.request(method, path, **kwargs)
    assert answer.status_code in ALLOWED, (answer.status_code, answer.text)
    if answer.status_code >= 400:
        assert snapshot(rt) == before, "a refused request stored something"
        assert answer.json()["error"]
    return int(answer.status_code)


@FUZZ
@given(body=st.one_of(st.binary(max_size=300), generic_calls.map(dump), json_values.map(dump)))
def test_generic_single(svc: tuple[TestClient, Runtime], body: bytes) -> None:
    check(*svc, "POST", "/v1/calls", content=body)


@FUZZ
@given(lines=st.lists(st.one_of(st.binary(max_size=80), generic_calls.map(dump)), max_size=6))
def test_generic_bulk(svc: tuple[TestClient, Runtime], lines: list[bytes]) -> None:
    client, rt = svc
    status = check(client, rt, "POST", "/v1/calls/bulk", content=b"\n".join(lines))
    if status == 200:
        body = client.post("/v1/calls/bulk", content=b"\n".join(lines)).json()
        assert sum(body[k] for k in ("accepted", "held", "ignored", "rejected")) == len(body["lines"])


TWILIO_FIELDS = "CallSid ParentCallSid From To CallStatus Direction CallDuration Timestamp DialCallStatus"
TWILIO_FIELDS += " DialCallDuration SipHeader_X-Client-Id"
TWILIO_SAMPLES = ["completed", "busy", "ringing", "no-answer", "inbound", "outbound-dial", "CA" + "f" * 32, "-5"]
TWILIO_SAMPLES += ["Sun, 25 Mar 2018 09:53:19 +0000", "99999999"]
twilio_values = st.one_of(text, numbers, st.sampled_from(TWILIO_SAMPLES))


@FUZZ
@given(
    form=st.dictionaries(st.sampled_from(TWILIO_FIELDS.split()), twilio_values, max_size=10), raw=st.binary(max_size=60)
)
def test_twilio(svc: tuple[TestClient, Runtime], form: dict[str, str], raw: bytes) -> None:
    client, rt = svc
    form = {"AccountSid": TWILIO_SID, **form}
    signature = twilio_signature(TWILIO_TOKEN, "http://testserver/twilio/voice", form.items())
    headers = {**FORM, "X-Twilio-Signature": signature}
    check(client, rt, "POST", "/twilio/voice", content=urlencode(form), headers=headers)
    check(client, rt, "POST", "/twilio/voice", content=raw, headers=headers)


zadarma_fields = ["pbx_call_id", "caller_id", "called_did", "call_start", "duration", "disposition", "internal",
                  "destination", "client_id"]  # fmt: skip
zadarma_values = st.one_of(text, numbers, st.sampled_from(["answered", "busy", "2024-05-14 13:37:11", "-1", "x y"]))


@FUZZ
@given(
    event=st.sampled_from(["NOTIFY_END", "NOTIFY_OUT_END", "NOTIFY_START", "NOTIFY_RECORD", "NOTIFY_IVR", "?"]),
    form=st.dictionaries(st.sampled_from(zadarma_fields), zadarma_values, max_size=9),
    raw=st.binary(max_size=60),
)
def test_zadarma(svc: tuple[TestClient, Runtime], event: str, form: dict[str, str], raw: bytes) -> None:
    client, rt = svc
    form = {"event": event, **form}
    if event.startswith("NOTIFY_OUT"):
        signed = form.get("internal", "") + form.get("destination", "") + form.get("call_start", "")
    else:
        signed = form.get("caller_id", "") + form.get("called_did", "") + form.get("call_start", "")
    headers = {**FORM, "Signature": zadarma_signature(ZADARMA_SECRET, signed)}
    check(client, rt, "POST", "/zadarma/main", content=urlencode(form), headers=headers)
    check(client, rt, "POST", "/zadarma/main", content=raw, headers=headers)
    check(client, rt, "GET", "/zadarma/main", params={"zd_echo": form.get("caller_id", "")})


MANGO_FIELDS = "from to line_number create_time talk_time end_time entry_result customer"
mango_docs = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"entry_id": st.one_of(text, st.just("ZW50cnk=")), "call_direction": json_values},
        optional={k: json_values for k in MANGO_FIELDS.split()},
    ),
)


@FUZZ
@given(doc=mango_docs, kind=st.sampled_from(["summary", "call", "recording", "other"]))
def test_mango(svc: tuple[TestClient, Runtime], doc: Any, kind: str) -> None:
    client, rt = svc
    json_text = json.dumps(doc)
    sign = hashlib.sha256((MANGO_KEY + json_text + MANGO_SALT).encode()).hexdigest()
    body = urlencode({"vpbx_api_key": MANGO_KEY, "sign": sign, "json": json_text})
    check(client, rt, "POST", f"/mango/office/events/{kind}", content=body, headers=FORM)
