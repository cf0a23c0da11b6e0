"""The naive baseline of issue 7: one Celery task per call, on its own Celery app and worker.

``store_call(call)`` does what a straightforward implementation would: validate the call with
``worker.model.calls.CallEvent``, append its row to the counter's Redis list, and when the list reaches
``BENCH_NAIVE_FLUSH_ROWS`` rows, take them and upload them as one CSV with the project's Metrica
client. The worker process is ``celery -A bench.naive worker`` with the settings in the environment
(``BENCH_NAIVE_REDIS_URL``, ``BENCH_NAIVE_EMULATOR_URL``, ``BENCH_NAIVE_FLUSH_ROWS``).

Timing marks (in Redis, so the harness reads them without a result backend): ``naive:first`` the
wall-clock time the first task ran, ``naive:last`` the time the ``naive:done`` counter reached
``naive:expect``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import orjson
from celery import Celery
from pydantic import SecretStr
from redis import Redis

from worker.delivery.csvfile import build_csv
from worker.delivery.metrica import MetricaClient
from worker.model.calls import CallEvent

PREFIX = "naive:"
app = Celery("bench_naive", set_as_current=False)


def configure(redis_url: str) -> None:
    app.conf.update(
        broker_url=redis_url,
        broker_transport_options={"global_keyprefix": PREFIX + "celery:"},
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )


configure(os.environ.get("BENCH_NAIVE_REDIS_URL", "redis://127.0.0.1:6379/0"))
_clients: dict[str, Any] = {}


def _redis() -> Redis:
    if "redis" not in _clients:
        _clients["redis"] = Redis.from_url(os.environ["BENCH_NAIVE_REDIS_URL"], decode_responses=True)
    client: Redis = _clients["redis"]
    return client


def _metrica() -> MetricaClient:
    if "metrica" not in _clients:
        _clients["metrica"] = MetricaClient(os.environ["BENCH_NAIVE_EMULATOR_URL"], timeout=httpx.Timeout(60.0))
    client: MetricaClient = _clients["metrica"]
    return client


@app.task(name="bench.naive.store_call", ignore_result=True)
def store_call(call: dict[str, Any]) -> None:
    redis = _redis()
    redis.set(PREFIX + "first", repr(time.time()), nx=True)
    event = CallEvent.model_validate(call)
    bucket = event.bucket
    key = f"{PREFIX}buf:{bucket.encode()}"
    size = redis.rpush(key, orjson.dumps(event.to_row()))
    if size >= int(os.environ.get("BENCH_NAIVE_FLUSH_ROWS", "1000")):
        pipe = redis.pipeline(transaction=True)
        pipe.lrange(key, 0, -1)
        pipe.delete(key)
        rows, _ = pipe.execute()
        if rows:
            seq = redis.incr(PREFIX + "seq")
            content = build_csv(bucket.spec, bucket.id_type, rows)
            _metrica().upload(bucket.spec, bucket.counter_id, SecretStr("demo-token"), content, comment=f"naive{seq}")
    done = redis.incr(PREFIX + "done")
    if done >= int(redis.get(PREFIX + "expect") or 0):
        redis.set(PREFIX + "last", repr(time.time()))
