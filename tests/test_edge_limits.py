"""The service's other limits over real HTTP (uvicorn) and real Redis: the held stream's cap, conversions
only for served counters, control characters, NDJSON line length, /metrics exposure, ctl output."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson
from click.testing import CliRunner

from config.settings import Settings
from ctl.__main__ import main
from ctl.context import Context
from tests.ingest_helpers import STATIC, add_routes, held_calls, ingest_settings, recent, snapshot, stored_rows
from tests.pipeline import running_ingest
from worker.intake.service import build_intake
from worker.model.inbound import InboundCall
from worker.runtime import Runtime

UNKNOWN = "+74950009999"


def test_the_held_stream_is_capped_with_a_clear_refusal_and_a_metric(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings, held_max_calls=3)
    rt = Runtime(settings)
    try:
        with running_ingest(settings) as base, httpx.Client(base_url=base) as http:
            codes = []
            for n in range(5):
                call = {"call_id": f"h-{n}", "to": UNKNOWN, "start": recent(), "ClientId": "1"}
                answer = http.post("/v1/calls", json=call)
                codes.append(answer.status_code)
            assert codes == [200, 200, 200, 503, 503]
            assert "CALLTRACK_HELD_MAX_CALLS" in answer.json()["error"]
            bulk = b"\n".join(orjson.dumps({"call_id": f"hb-{n}", "to": UNKNOWN, "start": recent()}) for n in range(50))
            assert http.post("/v1/calls/bulk", content=bulk).status_code == 503
            metrics = http.get("/metrics").text
        assert len(held_calls(rt)) == 3
        assert 'calltrack_calls_rejected_total{provider="generic",reason="held_full"}' in metrics
    finally:
        rt.close()


def test_conversions_only_for_counters_this_deployment_serves(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings, ingest_counters=[909])
    rt = Runtime(settings)
    add_routes(rt)  # counters 101, 202, 303
    try:
        before = snapshot(rt)
        with running_ingest(settings) as base, httpx.Client(base_url=base) as http:

            def conversion(counter: int, n: int) -> dict[str, object]:
                return {"counter_id": counter, "conversion_id": f"o-{counter}-{n}", "ClientId": "1",
                        "Target": "paid", "DateTime": recent()}  # fmt: skip

            made_up = http.post("/v1/conversions", json=conversion(5_000_001, 1))
            assert made_up.status_code == 422
            assert made_up.json()["errors"][0] == {
                "field": "counter_id",
                "rule": "not_served",
                "message": made_up.json()["errors"][0]["message"],
            }
            many = b"\n".join(orjson.dumps(conversion(6_000_000 + n, n)) for n in range(200))
            refused = http.post("/v1/conversions/bulk", content=many)
            assert refused.status_code == 422 and refused.json()["rejected"] == 200
            assert snapshot(rt) == before
            assert http.post("/v1/conversions", json=conversion(101, 1)).status_code == 200  # routing table
            assert http.post("/v1/conversions", json=conversion(909, 1)).status_code == 200  # configured
    finally:
        rt.close()


def test_control_characters_are_refused_with_the_field_named(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings)
    rt = Runtime(settings)
    add_routes(rt)
    try:
        with running_ingest(settings) as base, httpx.Client(base_url=base) as http:
            call = {"call_id": "cc-1", "to": STATIC, "start": recent(), "ClientId": "1"}
            for field, value in [
                ("Tag", "direct\x1b[2J\x1b[31mowned"),
                ("URL", "https://shop.example/\u2028fake log line"),
                ("UserId", "user\u0085two"),
                ("Tag", "a\u2029b"),
                ("URL", "https://x.example/\x9b31m"),
            ]:
                answer = http.post("/v1/calls", json={**call, field: value})
                assert answer.status_code == 422, (field, answer.text)
                error = answer.json()["errors"][0]
                assert (error["field"], error["rule"]) == (field, "control_character")
            number = http.get(
                "/v1/number", params={"counter": 202, "ClientId": "1", "URL": "https://a.example/\x1b]0;x"}
            )
            assert number.status_code == 422 and number.json()["errors"][0]["field"] == "URL"
        assert stored_rows(rt) == []
    finally:
        rt.close()


def test_a_bulk_line_longer_than_the_limit_is_refused(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings, ingest_max_line_bytes=1024)
    rt = Runtime(settings)
    add_routes(rt)
    try:
        with running_ingest(settings) as base, httpx.Client(base_url=base) as http:
            line = orjson.dumps(
                {"call_id": "long", "to": STATIC, "start": recent(), "ClientId": "1", "Tag": "x" * 2000}
            )
            answer = http.post("/v1/calls/bulk", content=line)
            assert answer.status_code == 413 and "longer than 1024 bytes" in answer.json()["error"]
        assert stored_rows(rt) == []
    finally:
        rt.close()


def test_metrics_answer_loopback_or_the_token_only(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings, ingest_trusted_proxies=["127.0.0.1/32"])
    with running_ingest(settings) as base, httpx.Client(base_url=base) as http:
        assert http.get("/metrics").status_code == 200
        remote = http.get("/metrics", headers={"X-Forwarded-For": "203.0.113.5"})
        assert remote.status_code == 403 and "calltrack_" not in remote.text
    token = "metrics-token-0123456789"
    with running_ingest(ingest_settings(make_settings, ingest_metrics_token=token)) as base:
        assert httpx.get(f"{base}/metrics").status_code == 401
        assert httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_ctl_escapes_what_it_prints(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings)
    rt = Runtime(settings)
    try:
        evil = "x\x1b[2J\x1b]0;pwned\x07\u2028\u202e"
        call = InboundCall(provider="generic", call_id=f"id{evil}", started_at=recent(), answered=True,
                           tracking_number=UNKNOWN, caller="+79160000000", direction="in", talk=1)  # fmt: skip
        build_intake(rt).held.hold([(call, "unknown_number")])
        for args in (["held", "list"], ["held", "list", "--json"]):
            out = CliRunner().invoke(main, args, obj=Context(settings), catch_exceptions=False).output
            assert "id" in out
            assert not any(ch in out for ch in "\x1b\x07\u2028\u202e"), repr(out)
        table = CliRunner().invoke(main, ["held", "list"], obj=Context(settings)).output
        assert "\\x1b[2J" in table and "\\u2028" in table
    finally:
        rt.close()
