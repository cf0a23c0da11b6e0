"""Builders and probes shared by the ingestion tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import orjson
from redis import Redis
from starlette.testclient import TestClient

from config.settings import Settings
from ingest.app import create_app
from worker.dataplane.entries import split
from worker.delivery.csvfile import row_cells
from worker.intake.routing import Route
from worker.model.kinds import Bucket
from worker.runtime import Runtime

TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-auth-token-0123456789abcdef"
ZADARMA_SECRET = "zadarma-api-secret-0123456789"
MANGO_KEY = "ekfn3fno329f204fj59g23h0f294f23d"
MANGO_SALT = "idn239uf90i1d23283dh204gfh23dj3d"
CALLER_SECRET = "caller-hash-secret-0123456789"
STATIC = "+74951110001"
DYNAMIC = "+74951110002"
OUTGOING = "+74951110003"


def ingest_settings(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "twilio_auth_tokens": {TWILIO_SID: TWILIO_TOKEN},
        "zadarma_secrets": {"main": ZADARMA_SECRET},
        "mango_accounts": {"office": f"{MANGO_KEY}:{MANGO_SALT}"},
        "caller_hash_secret": CALLER_SECRET,
        "routing_cache_seconds": 0,
        "http_write_timeout": 2,  # no uploads here; keeps the lock-lease rule satisfied
        "identifier_fields": {
            "twilio": {"ClientId": "SipHeader_X-Client-Id"},
            "mango": {"ClientId": "customer.client_id"},
            "asterisk": {"ClientId": "userfield", "Yclid": "userfield"},
        },
    }
    values.update(overrides)
    return make_settings(**values)


def add_routes(rt: Runtime) -> None:
    from worker.intake.service import build_intake

    build_intake(rt).routing.add(
        [
            Route(STATIC, 101, "static", "direct"),
            Route(DYNAMIC, 202, "dynamic"),
            Route(OUTGOING, 303, "static", outgoing=True),
        ]
    )


@contextmanager
def service(settings: Settings) -> Iterator[tuple[TestClient, Runtime]]:
    rt = Runtime(settings)
    add_routes(rt)
    # A loopback peer: beyond loopback the generic API needs its token (tests/test_edge_*.py).
    with TestClient(create_app(settings, rt), client=("127.0.0.1", 50000)) as client:
        yield client, rt
    rt.close()


def stored_rows(rt: Runtime) -> list[dict[str, str]]:
    """Every call row in the ingest streams, with its bucket under ``_bucket``."""
    rows = []
    for shard in range(rt.keys.shards):
        for _, group in cast(list[tuple[str, dict[str, str]]], rt.redis.xrange(rt.keys.stream(shard))):
            for fields in split(group):
                bucket = Bucket.decode(fields["b"])
                cells = row_cells(bucket.spec, bucket.id_type, fields["r"])
                rows.append({**cells, "_bucket": fields["b"], "_digest": fields["d"]})
    return rows


def held_calls(rt: Runtime) -> list[tuple[str, dict[str, Any]]]:
    return [
        (fields["reason"], orjson.loads(fields["call"]))
        for _, fields in cast(list[tuple[str, dict[str, str]]], rt.redis.xrange(rt.keys.held))
    ]


def snapshot(rt: Runtime) -> dict[bytes, bytes]:
    """Every key of the namespace with its serialised value: equal snapshots mean nothing was stored.

    Metrics counters (``{m}`` keys) are left out: counting a refused request is not storing it.
    """
    raw = Redis.from_url(rt.settings.redis_url)
    try:
        pattern = f"{rt.settings.namespace}:*"
        keys = [key for key in raw.scan_iter(match=pattern, count=1000) if b":{m}:" not in key]
        return {key: cast(bytes, raw.dump(key)) for key in keys}
    finally:
        raw.close()


def recent(seconds_ago: int = 3600) -> int:
    return int(time.time()) - seconds_ago
