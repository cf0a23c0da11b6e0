"""The whole path on real parts: producer -> Redis -> Celery worker and beat -> emulator over HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from config.settings import Settings
from emulator.server import RunningEmulator
from tests.helpers import make_call, wait_for
from tests.pipeline import running_emulator, running_worker
from worker.model.calls import CallEvent
from worker.runtime import Runtime

ID_COLUMNS = {"ClientId", "Yclid", "UserId"}


def batch_states(rt: Runtime) -> Counter[str]:
    states: Counter[str] = Counter()
    for key in rt.redis.scan_iter(match=f"{rt.settings.namespace}:*:batch:*", count=1000):
        states[cast(str, rt.redis.hget(key, "state"))] += 1
    return states


def expected_row(raw: dict[str, Any]) -> dict[str, str]:
    return CallEvent.model_validate(raw).to_row()


@pytest.mark.parametrize(("broker", "data"), [("redis", "redis"), ("rabbitmq", "redis"), ("rabbitmq", "cluster")])
def test_thousand_calls_for_three_counters_arrive_exactly_once_and_reach_processed(
    broker: str, data: str, make_settings: Callable[..., Settings], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """On a single Redis with either broker, and on a local 3-master Redis Cluster with RabbitMQ."""
    brokers = {"broker_url": request.getfixturevalue("amqp_broker")} if broker == "rabbitmq" else {}
    make = request.getfixturevalue("cluster_settings") if data == "cluster" else make_settings
    with running_emulator(step_seconds=0.1) as emulator:
        settings = make(metrica_base_url=emulator.base_url, flush_max_rows=150, flush_max_age=0.5, **brokers)
        calls = [
            make_call(counter, n, id_type="ClientId" if n % 3 else "Yclid")
            for n in range(1000)
            for counter in [(101, 202, 303)[n % 3]]
        ]
        with running_worker(settings, tmp_path) as app:
            rt = app.runtime()
            producer = Runtime(settings).producer
            assert str(app.conf.broker_url).startswith("amqp") == (broker == "rabbitmq")
            result = producer.submit(calls[:400])
            result2 = producer.submit(calls[400:])
            assert len(result.accepted) + len(result2.accepted) == 1000

            def all_final() -> bool:
                states = batch_states(rt)
                return bool(states) and set(states) == {"PROCESSED"} and _stored(emulator) == 1000

            wait_for(all_final, timeout=90, interval=0.3, what="every batch PROCESSED")

        uploads = emulator.admin.uploads()
        rows = emulator.admin.rows()
        assert len(rows) == 1000
        # One identifier type per file, and every file's rows belong to one counter.
        for upload in uploads:
            assert upload["status"] == "PROCESSED"
            header = set(upload["columns"]) if "columns" in upload else set(upload["rows"][0])
            assert len(header & ID_COLUMNS) == 1
        # Every call exactly once, every column value as sent.
        by_key: dict[tuple[str, str], list[dict[str, str]]] = {}
        for row in rows:
            id_col = next(c for c in ID_COLUMNS if row.get(c))
            by_key.setdefault((str(row["counter"]), row[id_col]), []).append(row)
        for raw in calls:
            row = expected_row(raw)
            id_col = next(c for c in ID_COLUMNS if c in row)
            found = by_key.get((str(raw["counter_id"]), row[id_col]), [])
            assert len(found) == 1, f"call {raw['call_id']} stored {len(found)} times"
            cells = {k: v for k, v in found[0].items() if k[0].isupper() and v != ""}
            assert cells == row
        # Reconciliation recorded Metrica's quantities on each batch (a fresh client: the worker closed its
        # runtime's, and a closed cluster client does not reconnect).
        rt = Runtime(settings)
        for key in rt.redis.scan_iter(match=f"{settings.namespace}:*:batch:*", count=1000):
            record = cast(dict[str, str], rt.redis.hgetall(key))
            assert record["source_quantity"] == record["line_quantity"] == record["rows"]
        rt.close()


def _stored(emulator: RunningEmulator) -> int:
    return int(emulator.admin.stats()["rows"])
