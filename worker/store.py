"""Redis connections and the per-shard set-up every writer and reader relies on."""

from __future__ import annotations

import secrets
import string

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ResponseError
from redis.retry import Retry

from worker.keys import DRAIN_GROUP, Keys

_EPOCH_ALPHABET = string.ascii_lowercase + string.digits


def connect(url: str) -> Redis:
    """A client returning ``str``, with explicit timeouts and a short retry on dropped connections."""
    client: Redis = Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=30,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=3),
    )
    return client


def ensure_shard(redis: Redis, keys: Keys, shard: int) -> None:
    """Create the shard's stream, its consumer group and its epoch if they do not exist yet.

    The group starts at ``0`` so entries written before it existed are drained too. The epoch is a
    random tag in every batch id of the shard: if Redis ever loses its data, new batch ids cannot
    collide with uploads Metrica already holds.
    """
    try:
        redis.xgroup_create(keys.stream(shard), DRAIN_GROUP, id="0", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise
    epoch = "".join(secrets.choice(_EPOCH_ALPHABET) for _ in range(6))
    redis.set(keys.epoch(shard), epoch, nx=True)


def ensure_all_shards(redis: Redis, keys: Keys) -> None:
    for shard in range(keys.shards):
        ensure_shard(redis, keys, shard)
