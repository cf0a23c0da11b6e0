"""Metric label values come from fixed sets (issue 22): one bulk request of 20,000 lines, each with its
own unknown JSON key, used to add 20,000 series to ``{m}:counters`` (kept forever). Against the real
service (uvicorn over real HTTP, real Redis; 127.0.0.1 only)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import orjson

from config.settings import Settings
from ingest.providers.generic import GenericCall
from tests.edge_helpers import env_of, ingest_process
from tests.ingest_helpers import STATIC, add_routes, recent
from worker.delivery.uploader import UploadOutcome
from worker.ops import labels
from worker.runtime import Runtime

LINES = 20_000


def test_unknown_json_keys_of_a_bulk_request_add_no_series(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    rt = Runtime(settings)
    add_routes(rt)
    try:
        with ingest_process(env_of(settings)) as svc:
            start = recent()
            body = b"\n".join(
                orjson.dumps({"call_id": f"c{n}", "to": STATIC, "start": start, f"x-{n}-\u00e9{'k' * 40}": n})
                for n in range(LINES)
            )
            answer = httpx.post(f"{svc.base_url}/v1/calls/bulk", content=body, timeout=120)
            assert answer.status_code == 422, answer.text[:300]  # no line holds a valid call
            assert answer.json()["rejected"] == LINES
            # The service writes its counts every second: wait until this request's are there.
            field = "calls_rejected|generic|other:extra_forbidden"
            deadline = time.monotonic() + 15
            while int(rt.redis.hget(rt.keys.metrics, field) or 0) < LINES and time.monotonic() < deadline:
                time.sleep(0.2)
            counts = rt.metrics.read()
            assert counts.get(field) == LINES, counts
            assert len(counts) <= 3, sorted(counts)  # calls_received, calls_rejected (+ one spare)
            assert not any("x-" in name for name in counts)
            # A known field's rule is still told apart.
            bad = {"call_id": "bad-1", "to": STATIC, "start": "yesterday"}
            assert httpx.post(f"{svc.base_url}/v1/calls", json=bad, timeout=10).status_code in (400, 422)
            deadline = time.monotonic() + 15
            while "calls_rejected|generic|start:value_error" not in rt.metrics.read() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "calls_rejected|generic|start:value_error" in rt.metrics.read()
    finally:
        rt.close()


def test_label_sets_cover_the_codes_own_words() -> None:
    """The fixed sets hold every word the code itself counts (else it would show as ``other``)."""
    for name, info in GenericCall.model_fields.items():
        assert (info.alias or name) in labels.FIELDS, name
    assert {o.value for o in UploadOutcome} <= labels.CODE_WORDS["outcome"]
    assert labels.reason("ClientId:string_too_long") == "ClientId:string_too_long"
    assert labels.reason("Yclid:control_character") == "Yclid:control_character"
    assert labels.reason("made-up:extra_forbidden") == "other:extra_forbidden"
    assert labels.reason("to:made_up_rule") == "to:other"
    assert labels.reason("counter_id:not_owned") == "counter_id:not_owned"  # a client key's refusal
    assert labels.reason("counter_id:not_served") == "counter_id:not_served"
    assert labels.reason("anything at all") == "other"
    assert labels.bounded("provider", "evil") == "other"
    assert labels.bounded("counter_id", "101") == "101"
    assert labels.bounded("error_type", "quota_requests_by_ip") == "quota_requests_by_ip"
    assert labels.bounded("error_type", "surprise") == "other"
