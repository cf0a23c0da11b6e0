"""Small builders shared by tests."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn


def make_call(counter: int, n: int, *, id_type: str = "ClientId", **extra: Any) -> dict[str, Any]:
    """A valid call for ``counter``; ``n`` makes its ids and values distinct."""
    identifier = {"ClientId": str(10**15 + n), "Yclid": str(7 * 10**15 + n), "UserId": f"user-{n}"}[id_type]
    call: dict[str, Any] = {
        "counter_id": counter,
        "call_id": f"call-{counter}-{n}",
        "provider": "api",
        id_type: identifier,
        "DateTime": int(datetime.now(UTC).timestamp()) - 3600 - n % 1000,
        "PhoneNumber": f"+7912{n:07d}",
        "TalkDuration": n % 300,
        "HoldDuration": n % 30,
        "CallMissed": n % 7 == 0,
        "StaticCall": n % 2,
        "Price": f"{n % 50}.25",
        "Currency": "RUB",
        "Tag": f"tag-{n % 5}",
        "FirstTimeCaller": n % 3 == 0,
        "URL": f"https://shop.example/p/{n}",
        "CallTrackerURL": f"https://tracker.example/c/{n}",
    }
    call.update(extra)
    return call


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def unavailable(message: str) -> NoReturn:
    """A part the test needs is missing: skipped locally, a failure under CI=true (CI has every part)."""
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def chromium() -> str:
    """The system Chromium for browser tests; skipped locally when missing, a failure under CI=true."""
    found = next((p for p in CHROMIUM_PATHS if os.path.exists(p)), None) or shutil.which("chromium")
    if found is None:
        unavailable("Chromium is not installed (./scripts/ensure-chromium installs it)")
    return found


def seal_batch(rt: Any, counter: int = 101, n: int = 3, start: int = 0) -> str:
    """Submit ``n`` calls for ``counter`` and seal them into one batch; its id."""
    from worker.delivery.drain import drain

    rt.producer.submit([make_call(counter, i) for i in range(start, start + n)])
    (batch_id,) = drain(rt, seal_all=True).sealed
    return str(batch_id)


def stored_rows(rt: Any, batch_id: str) -> list[dict[str, str]]:
    """A sealed batch's rows as column -> value (rows are stored as CSV lines: worker/delivery/csvfile.py)."""
    from worker.delivery.csvfile import row_cells
    from worker.model.kinds import Bucket

    bucket = Bucket.decode(str(rt.redis.hget(rt.keys.batch(batch_id), "bucket")))
    return [row_cells(bucket.spec, bucket.id_type, r) for r in rt.redis.lrange(rt.keys.rows(batch_id), 0, -1)]


def batch_record(rt: Any, batch_id: str) -> dict[str, str]:
    return dict(rt.redis.hgetall(rt.keys.batch(batch_id)))


def redis_contents(url: str, namespace: str) -> str:
    """Every key of ``namespace`` and every value it holds, read by type (string, hash, list, set,
    zset, stream) as text, for a scan for secrets. Not ``DUMP``: its serialization compresses long
    values (LZF), which can hide a secret. Celery messages' base64 bodies are decoded too; an unknown
    type fails, so a new one is never skipped silently."""
    import base64
    import binascii

    import orjson
    from redis import Redis

    client = Redis.from_url(url)
    readers: dict[bytes, Callable[[bytes], Any]] = {
        b"string": client.get,
        b"hash": client.hgetall,
        b"list": lambda key: client.lrange(key, 0, -1),
        b"set": client.smembers,
        b"zset": lambda key: client.zrange(key, 0, -1, withscores=True),
        b"stream": lambda key: client.xrange(key, "-", "+"),
    }
    parts: list[str] = []
    try:
        for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            kind = client.type(key)
            if kind == b"none":
                continue  # expired since the scan saw it
            assert kind in readers, f"no reader for {kind!r} ({key!r})"
            value = readers[kind](key)
            parts += [key.decode(errors="backslashreplace"), repr(value)]
            for item in value if isinstance(value, list) else []:  # kombu envelopes: base64 bodies
                try:
                    envelope = orjson.loads(item)
                    if envelope.get("properties", {}).get("body_encoding") == "base64":
                        parts.append(base64.b64decode(envelope["body"]).decode(errors="backslashreplace"))
                except (orjson.JSONDecodeError, AttributeError, TypeError, KeyError, binascii.Error):
                    continue
    finally:
        client.close()
    return "\n".join(parts)


def stream_events(rt: Any, shard: int, redis: Any = None) -> int:
    """How many events a shard's ingest stream holds (an entry holds one bucket's events of a chunk)."""
    from worker.dataplane.entries import events_in

    return sum(events_in(fields) for _, fields in (redis or rt.redis).xrange(rt.keys.stream(shard)))
