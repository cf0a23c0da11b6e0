"""The generic endpoints behind a bearer token when one is configured; nothing stored without it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from config.settings import Settings
from tests.pipeline import running_ingest

TOKEN = "ingest-api-token-0123456789"


def test_generic_and_conversion_endpoints_require_the_token(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(ingest_api_token=TOKEN, ingest_counters=[101])
    conversion = {
        "counter_id": 101,
        "conversion_id": "o-1",
        "ClientId": "1",
        "Target": "paid",
        "DateTime": int(datetime.now(UTC).timestamp()) - 60,
    }
    with running_ingest(settings) as base, httpx.Client(base_url=base) as http:
        assert http.post("/v1/conversions", json=conversion).status_code == 401
        wrong = http.post("/v1/conversions", json=conversion, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403 and TOKEN not in wrong.text
        assert http.post("/v1/calls/bulk", content=b"{}").status_code == 401
        good = http.post("/v1/conversions", json=conversion, headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200
        # The session API stays open: browsers call it.
        assert http.get("/v1/number", params={"counter": 1, "ClientId": "1"}).status_code == 200
