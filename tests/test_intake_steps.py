"""The intake written once as steps (worker/dataplane/steps.py): the synchronous runner (workers, the CLI,
the AMI client) and the asynchronous one (the ingestion service's event loop, ``redis.asyncio``) answer the
same outcomes and store the same rows; and the one check per call (the fused rules, falling back to
``CallEvent``) stores what the model alone stored."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from redis import Redis

from config.settings import Settings
from ingest.providers import generic
from tests.ingest_helpers import DYNAMIC, OUTGOING, STATIC, add_routes, ingest_settings, stored_rows
from worker.dataplane.steps import run_async
from worker.delivery.fastrows import FastCheck
from worker.intake.service import Outcome, build_intake
from worker.model.inbound import InboundCall
from worker.runtime import Runtime
from worker.store import connect_async

NOW = int(time.time())


def calls() -> list[InboundCall]:
    base = {"start": NOW - 600, "answer": NOW - 590, "end": NOW - 500}
    docs: list[dict[str, Any]] = [
        {"call_id": "a", "to": STATIC, "from": "+79161234567", "ClientId": "1556018960001", **base},
        {"call_id": "b", "to": STATIC, "ClientId": "1556018960002", "URL": "https://shop.example/?q=1", **base},
        {"call_id": "c", "to": STATIC, "UserId": "u-1", "Tag": "own tag", "Price": "10.5", "Currency": "RUB", **base},
        {"call_id": "d", "to": STATIC, **base},  # no identifier: held
        {"call_id": "e", "to": "+74959990000", "ClientId": "1", **base},  # unknown number: held
        {"call_id": "f", "to": OUTGOING, "direction": "out", "ClientId": "2", **base},
        {"call_id": "g", "to": STATIC, "direction": "out", "ClientId": "3", **base},  # outgoing not enabled
        {"call_id": "h", "to": STATIC, "ClientId": "4", "URL": "https://x/" + "y" * 5000, **base},  # rejected
        {"call_id": "i", "to": STATIC, "ClientId": "5", "start": NOW - 86_400 * 40},  # too old: held
        {"call_id": "j", "to": DYNAMIC, "ClientId": "6", **base},  # dynamic, no session: a static call
        {"call_id": "k", "to": STATIC, "ClientId": "7", "CallTrackerURL": "https://ct.example/k", **base},
    ]
    return [generic.to_call(doc) for doc in docs]


@pytest.fixture
def second(make_settings: Callable[..., Settings], redis: Redis, namespace: str) -> Iterator[Callable[[str], Runtime]]:
    made: list[Runtime] = []

    def make(suffix: str) -> Runtime:
        rt = Runtime(ingest_settings(make_settings, namespace=f"{namespace}{suffix}"))
        add_routes(rt)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()
        keys = list(redis.scan_iter(match=f"{rt.keys.namespace}:*", count=1000))
        if keys:
            redis.delete(*keys)


def _held(rt: Runtime) -> list[str]:
    entries = cast(list[tuple[str, dict[str, str]]], rt.redis.xrange(rt.keys.held))
    return sorted(f"{fields['reason']} {fields['call']}" for _, fields in entries)


def _run_async(rt: Runtime, given: list[InboundCall]) -> list[Outcome]:
    async def run() -> list[Outcome]:
        redis = connect_async(rt.settings.redis_url)
        try:
            return await run_async(redis, build_intake(rt).accept_steps(given))
        finally:
            await redis.aclose()

    return asyncio.run(run())


def test_both_runners_and_both_checks_store_the_same(
    second: Callable[[str], Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    given = calls()
    sync_rt, async_rt, model_rt = second("s"), second("a"), second("m")
    by_sync = build_intake(sync_rt).accept(given)
    by_async = _run_async(async_rt, given)
    monkeypatch.setattr(FastCheck, "call", lambda self, index, raw: None)  # every call through CallEvent
    by_model = build_intake(model_rt).accept(given)

    assert by_sync == by_async == by_model
    statuses = [o.status for o in by_sync]
    assert statuses == [
        "accepted",
        "accepted",
        "accepted",
        "held",
        "held",
        "accepted",
        "ignored",
        "rejected",
        "held",
        "accepted",
        "accepted",
    ]
    assert by_sync[7].errors[0].field == "URL"

    def rows(rt: Runtime) -> list[dict[str, str]]:
        return sorted(stored_rows(rt), key=lambda row: row["_digest"])

    assert rows(sync_rt) == rows(async_rt) == rows(model_rt)
    assert len(rows(sync_rt)) == 6
    assert _held(sync_rt) == _held(async_rt) == _held(model_rt)


def test_redis_down_is_a_producer_error_on_the_event_loop(second: Callable[[str], Runtime]) -> None:
    """The asynchronous runner raises what the synchronous one does, so the service answers 503."""
    from worker.errors import ProducerError

    intake = build_intake(second("d"))  # routes and first-write set-up on the synchronous client

    async def run() -> None:
        redis = connect_async("redis://127.0.0.1:1/0")  # nothing listens: the write itself fails
        try:
            await run_async(redis, intake.accept_steps(calls()[:1]))
        finally:
            await redis.aclose()

    with pytest.raises(ProducerError):
        asyncio.run(run())
