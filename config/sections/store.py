"""Redis: where the data plane lives and how its keys are named; where Celery's broker and redbeat live."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, Field, field_validator, model_validator

_NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_REDIS_SCHEMES = {"redis", "rediss", "unix"}
_BROKER_SCHEMES = {"redis", "rediss", "amqp", "amqps", "pyamqp"}
# A cluster spreads the shards' slots over its masters: with 4 shards at most 4 slots carry every write.
CLUSTER_DEFAULT_SHARDS = 128


def _check_redis(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in _REDIS_SCHEMES:
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("must name a host, as in redis://127.0.0.1:6379/0")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None
    db = parts.path.lstrip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise ValueError("must end with a database number, as in redis://host:6379/0")
    return value


class StoreSettings(BaseModel):
    """The Redis server (or cluster), the key namespace, the shard count, Celery's broker and redbeat's Redis."""

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("CALLTRACK_REDIS_URL", "REDIS_URL"),
        description="Redis holding the ingest streams, buffers and batches (any node of it when clustered).",
    )
    redis_cluster: bool = Field(
        default=False,
        description="The data Redis is a Redis Cluster (redis-py's cluster client); CALLTRACK_REDIS_URL names "
        "one of its nodes. Celery's broker and redbeat then need URLs of their own.",
    )
    broker_url: str = Field(
        default="",
        description="Celery's broker: a single Redis (redis://) or RabbitMQ (amqp://). Empty: CALLTRACK_REDIS_URL.",
    )
    beat_redis_url: str = Field(
        default="",
        description="A single Redis for redbeat's schedule and lock. Empty: the broker when it is a Redis, "
        "else CALLTRACK_REDIS_URL when that is not a cluster.",
    )
    namespace: str = Field(default="ctw", description="Prefix of every Redis key this project owns.")
    shards: Annotated[int, Field(ge=1, le=256)] = Field(
        default=4,
        description=f"Ingest stream shards; a counter always maps to the same one. Fixed per deployment "
        f"(pinned in Redis at first start). Default 4, {CLUSTER_DEFAULT_SHARDS} with CALLTRACK_REDIS_CLUSTER.",
    )

    @model_validator(mode="before")
    @classmethod
    def _cluster_shards(cls, data: Any) -> Any:
        """A cluster without an explicit shard count gets CLUSTER_DEFAULT_SHARDS (slots spread over masters)."""
        if isinstance(data, dict) and "shards" not in data:
            flag = str(data.get("redis_cluster", "")).strip().lower()
            if flag in {"1", "true", "yes", "on"}:
                return {**data, "shards": CLUSTER_DEFAULT_SHARDS}
        return data

    @model_validator(mode="after")
    def _resolve_urls(self) -> StoreSettings:
        if not self.broker_url:
            if self.redis_cluster:
                raise ValueError(
                    "CALLTRACK_REDIS_CLUSTER needs CALLTRACK_BROKER_URL (Celery's Redis transport does not run on "
                    "a cluster): a single Redis or amqp://user:password@host:5672//"
                )
            self.broker_url = self.redis_url
        if not self.beat_redis_url:
            if self.broker_url.startswith(("redis://", "rediss://")):
                self.beat_redis_url = self.broker_url
            elif not self.redis_cluster:
                self.beat_redis_url = self.redis_url
            else:
                raise ValueError(
                    "CALLTRACK_BEAT_REDIS_URL must name a single Redis for redbeat when the data Redis is a cluster "
                    "and the broker is not a Redis"
                )
        return self

    @property
    def broker_is_amqp(self) -> bool:
        return urlsplit(self.broker_url).scheme in {"amqp", "amqps", "pyamqp"}

    @field_validator("redis_url", "beat_redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        return _check_redis(value) if value else value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in _BROKER_SCHEMES:
            raise ValueError("must be a redis://, rediss:// or amqp:// URL")
        if parts.scheme in _REDIS_SCHEMES:
            return _check_redis(value)
        if not parts.hostname:
            raise ValueError("must name a host, as in amqp://guest:guest@127.0.0.1:5672//")
        return value

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        if not _NAMESPACE_RE.match(value):
            raise ValueError("must be 1-32 lowercase letters, digits, '_' or '-', starting with a letter")
        return value
