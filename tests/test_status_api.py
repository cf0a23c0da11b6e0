"""The status API on real parts: Redis, the ingestion service over HTTP, a Celery worker and the emulator.

One call is followed through every state of a real run (stream, buffer, sealed batch, upload, final);
a held call shows its reason; an unknown call is a 404 with a clear body; no credentials is a 401.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.routing import Route

from config.settings import Settings
from ingest.app import create_app
from ingest.routes.openapi import document
from tests.accounts_helpers import ctl
from tests.helpers import make_call, wait_for
from tests.ingest_helpers import recent
from tests.pipeline import running_emulator, running_ingest, running_worker
from worker.delivery.drain import drain
from worker.model.kinds import UploadKind
from worker.runtime import Runtime

TOKEN = "status-token-0123456789abcdef"


def get(base: str, path: str, token: str | None = TOKEN, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{base}{path}", headers=headers, params=params, timeout=30)


def status_settings(make_settings: Callable[..., Settings], **extra: Any) -> Settings:
    values: dict[str, Any] = {"status_api_token": TOKEN, "flush_max_age": 30.0, "redispatch_after": 1.0}
    values.update(extra)
    return make_settings(**values)


def test_one_call_through_every_state(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with running_emulator(step_seconds=1.0) as emulator:
        settings = status_settings(make_settings, metrica_base_url=emulator.base_url, emulator_url=emulator.base_url)
        rt = Runtime(settings)
        with running_ingest(settings) as ingest:
            call = make_call(101, 1)
            assert len(rt.producer.submit([call]).accepted) == 1
            path = f"/v1/calls/api/{call['call_id']}"

            stream = get(ingest, path)
            assert stream.status_code == 200, stream.text
            assert stream.json()["place"] == "stream" and stream.json()["state"] == "IN_STREAM"
            assert stream.json()["times"]["accepted_at"] > 0

            drain(rt)
            buffered = get(ingest, path).json()
            assert buffered["place"] == "buffered" and buffered["counter_id"] == 101
            assert buffered["times"]["seal_due_at"] > time.time() * 1000

            drain(rt, seal_all=True)
            sealed = get(ingest, path).json()
            assert sealed["place"] == "batch" and sealed["state"] == "SEALED", sealed
            batch_id = sealed["batch"]["batch_id"]
            assert sealed["batch"]["rows"] == 1 and sealed["times"]["sealed_at"] > 0

            seen: list[str] = []
            with running_worker(settings, tmp_path):

                def final() -> bool:
                    body = get(ingest, path).json()
                    if not seen or seen[-1] != body["state"]:
                        seen.append(body["state"])
                    return bool(body["state"] == "PROCESSED")

                wait_for(final, timeout=60, interval=0.05, what="the call's batch PROCESSED")
            done = get(ingest, path).json()
            assert done["batch"]["batch_id"] == batch_id and done["batch"]["final"] is True
            assert done["batch"]["status"] == "PROCESSED" and done["batch"]["upload_id"]
            assert {"sealed_at", "uploaded_at", "final_at"} <= set(done["times"])
            assert "UPLOADED" in seen and seen[-1] == "PROCESSED", seen
            order = ["SEALED", "UPLOADING", "UPLOADED", "PROCESSED"]
            assert [s for s in seen if s in order] == sorted((s for s in seen if s in order), key=order.index)

            figures = get(ingest, "/v1/counters/101").json()
            assert figures["calls_uploaded"] == 1 and figures["batches"] == {"PROCESSED": 1}
            assert figures["calls_accepted"] == 1 and figures["calls_held"] == 0
            assert figures["token"]["state"] == "ok" and figures["open_uploads"] == 0
            uploads = get(ingest, "/v1/counters/101/uploads", per_page=10).json()
            assert uploads["total"] == 1 and uploads["uploads"][0]["batch_id"] == batch_id


def test_held_unknown_refused_and_conversions(make_settings: Callable[..., Settings]) -> None:
    settings = status_settings(make_settings, routing_cache_seconds=0)
    rt = Runtime(settings)
    with running_ingest(settings) as ingest:
        held = httpx.post(
            f"{ingest}/v1/calls", json={"call_id": "h-1", "to": "+74959999999", "start": recent(), "ClientId": "11"}
        )
        assert held.status_code == 200 and held.json()["status"] == "held", held.text
        answer = get(ingest, "/v1/calls/generic/h-1")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["place"] == "held" and body["held"]["reason"] == "unknown_number"
        assert body["times"]["held_at"] > 0

        code, out = ctl(settings, "where", "generic", "h-1", "--json")
        assert code == 0 and orjson.loads(out)["held"]["reason"] == "unknown_number"
        assert ctl(settings, "where", "generic", "nope")[0] == 1

        unknown = get(ingest, "/v1/calls/generic/nope")
        assert unknown.status_code == 404
        assert unknown.json()["state"] == "UNKNOWN" and "no call 'nope' from 'generic'" in unknown.json()["error"]

        missing = get(ingest, "/v1/calls/generic/h-1", token=None)
        assert missing.status_code == 401 and "Bearer" in missing.json()["error"]
        assert "held" not in missing.text
        assert get(ingest, "/v1/calls/generic/h-1", token="wrong").status_code == 403
        assert get(ingest, "/openapi.json", token=None).status_code == 401

        bad = get(ingest, "/v1/conversions/shop/o-1")
        assert bad.status_code == 422 and bad.json()["errors"] == [{"field": "counter_id", "rule": "positive_integer"}]
        conversion = {"counter_id": 101, "conversion_id": "o-1", "source": "shop", "ClientId": "1556018960123456789",
                      "Target": "paid", "DateTime": recent()}  # fmt: skip
        assert len(rt.producer.submit([conversion], kind=UploadKind.CONVERSIONS).accepted) == 1
        assert get(ingest, "/v1/conversions/shop/o-1", counter_id=101).json()["place"] == "stream"
        drain(rt, seal_all=True)
        sealed = get(ingest, "/v1/conversions/shop/o-1", counter_id=101).json()
        assert sealed["state"] == "SEALED" and sealed["batch"]["kind"] == "conversions"
        assert get(ingest, "/v1/conversions/shop/o-1", counter_id=102).status_code == 404
        assert get(ingest, "/v1/counters/101/uploads", page="x").json()["errors"][0]["field"] == "page"
        chat = {"counter_id": 101, "chat_id": "tg-1", "source": "tracker", "DateTime": recent(),
                "ChatPlatform": "telegram", "ChatUsername": "@ann", "ClientID": "1556018960123456789"}  # fmt: skip
        assert len(rt.producer.submit([chat], kind=UploadKind.CHATS).accepted) == 1
        drain(rt)
        buffered = get(ingest, "/v1/chats/tracker/tg-1", counter_id=101).json()
        assert buffered["place"] == "buffered" and buffered["kind"] == "chats"
        assert get(ingest, "/v1/chats/tracker/tg-2", counter_id=101).status_code == 404


def test_status_api_off_without_a_token_and_admin_token_refused(make_settings: Callable[..., Settings]) -> None:
    with running_ingest(make_settings()) as ingest:
        off = get(ingest, "/v1/calls/api/x")
        assert off.status_code == 404 and "CALLTRACK_STATUS_API_TOKEN" in off.json()["error"]
    # The admin token works on /admin/ only (issue 22): alone it does not switch the status API on,
    # and beside a status token it is a wrong token.
    with running_ingest(make_settings(admin_api_token="admin-token-0123456789")) as ingest:
        alone = get(ingest, "/v1/calls/api/x", token="admin-token-0123456789")
        assert alone.status_code == 404 and "place" not in alone.json()
    admin_too = make_settings(admin_api_token="admin-token-0123456789", status_api_token=TOKEN)
    with running_ingest(admin_too) as ingest:
        assert get(ingest, "/v1/calls/api/x", token="admin-token-0123456789").status_code == 403
        assert get(ingest, "/v1/counters/101", token="admin-token-0123456789").status_code == 403
        assert get(ingest, "/v1/calls/api/x").json()["place"] == "unknown"


def test_openapi_describes_every_status_route(make_settings: Callable[..., Settings]) -> None:
    doc = document()
    app = create_app(make_settings(status_api_token=TOKEN))
    prefixes = ("/v1/calls/", "/v1/conversions/", "/v1/chats/", "/v1/counters", "/openapi.json")
    status_paths = {
        r.path
        for r in app.routes
        if isinstance(r, Route) and "GET" in (r.methods or ()) and r.path.startswith(prefixes)
    }
    assert status_paths == set(doc["paths"])
    for path, item in doc["paths"].items():
        named = {p["name"] for p in item["get"].get("parameters", []) if p["in"] == "path"}
        assert named == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in refs(v)]
        return [r for v in node for r in refs(v)] if isinstance(node, list) else []

    for ref in refs(doc):
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"], ref
    assert orjson.loads(orjson.dumps(doc))["openapi"] == "3.1.0"
