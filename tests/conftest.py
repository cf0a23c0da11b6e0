"""Shared fixtures: a real Redis server, an isolated key namespace per test, settings, a runtime."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import RedisError

from config.settings import Settings
from emulator.server import RunningEmulator
from tests.helpers import unavailable
from tests.pipeline import running_emulator
from worker.runtime import Runtime

REDIS_URL = os.environ.get("CALLTRACK_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
AMQP_URL = os.environ.get("CALLTRACK_TEST_AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis; skips locally when none answers, but fails under CI=true."""
    try:
        Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except RedisError as error:
        unavailable(f"no Redis server answers at {REDIS_URL}: {error}")
    return REDIS_URL


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The test RabbitMQ; skips locally when none answers, but fails under CI=true (CI has one)."""
    from kombu import Connection

    try:
        with Connection(AMQP_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as error:
        unavailable(f"no RabbitMQ answers at {AMQP_URL}: {error}")
    return AMQP_URL


@pytest.fixture
def amqp_broker(amqp_url: str, namespace: str) -> Iterator[str]:
    """RabbitMQ as this test's broker; its namespaced queues are deleted afterwards."""
    from kombu import Connection

    yield amqp_url
    with Connection(amqp_url, connect_timeout=3) as conn:
        channel: Any = conn.channel()
        for name in (f"{namespace}.calltrack.periodic", f"{namespace}.calltrack.upload"):
            try:
                channel.queue_delete(name)
            except Exception:
                channel = conn.channel()
        channel.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Any]:
    """A local Redis Cluster (3 masters, 3 replicas) started for the session and stopped after it;
    skips locally without ``redis-server``, fails under CI=true (CI has the binary)."""
    import shutil

    from standalone.cluster import LocalCluster

    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        unavailable("no redis-server/redis-cli on PATH for a local Redis Cluster")
    with LocalCluster() as cluster:
        yield cluster


@pytest.fixture
def cluster_settings(redis_cluster: Any, make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Settings]]:
    """Settings whose data plane is the session's cluster (this test's namespace; the broker and redbeat
    stay on the test Redis); every key of the namespace is deleted from the cluster afterwards."""
    made: list[Settings] = []

    def make(**overrides: Any) -> Settings:
        settings = make_settings(
            **{"redis_url": redis_cluster.url, "redis_cluster": True, "broker_url": REDIS_URL}
            | {"beat_redis_url": REDIS_URL, "shards": 16}
            | overrides
        )
        made.append(settings)
        return settings

    yield make
    if made:
        from worker.store import connect_data

        client = connect_data(made[0])
        for key in list(client.scan_iter(match=f"{made[0].namespace}:*", count=1000)):
            client.delete(key)
        client.close()


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def namespace(redis: Redis) -> Iterator[str]:
    """A key namespace of this test's own; every key under it is deleted afterwards."""
    ns = "t" + uuid.uuid4().hex[:10]
    yield ns
    keys = list(redis.scan_iter(match=f"{ns}:*", count=1000))
    for start in range(0, len(keys), 500):
        redis.delete(*keys[start : start + 500])


@pytest.fixture
def make_settings(redis_url: str, namespace: str) -> Callable[..., Settings]:
    """Settings for this test: its own namespace, small batches, fast timers; override any field."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "namespace": namespace,
            "shards": 2,
            "flush_max_age": 0.5,
            "drain_interval": 0.2,
            "reconcile_interval": 0.5,
            "upload_lock_seconds": 20,
            "http_write_timeout": 5,
            "http_connect_timeout": 2,
            "http_read_timeout": 5,
            "redispatch_after": 5,
            "reconcile_first_poll_seconds": 0,
            "log_format": "json",
            "metrica_emulator": True,  # the suite uploads to the emulator (tests/emulator, tests/pipeline.py)
            "counter_join_wait": "warn",  # a new counter's data goes at once (tests/test_counter_setup.py holds it)
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def runtime(make_settings: Callable[..., Settings]) -> Iterator[Runtime]:
    rt = Runtime(make_settings())
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    """The Metrica emulator over real HTTP, one per test module (each ``rt`` resets it)."""
    with running_emulator(step_seconds=0.1) as emu:
        yield emu


@pytest.fixture
def rt(emulator: RunningEmulator, make_settings: Callable[..., Settings]) -> Iterator[Runtime]:
    """A runtime pointed at the module's emulator, reset for this test."""
    emulator.admin.reset()
    runtime = Runtime(make_settings(metrica_base_url=emulator.base_url))
    yield runtime
    runtime.close()
