"""Redis: where the data plane lives and how its keys are named."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, Field, field_validator

_NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_REDIS_SCHEMES = {"redis", "rediss", "unix"}


class StoreSettings(BaseModel):
    """The Redis server, the key namespace and the shard count."""

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("CALLTRACK_REDIS_URL", "REDIS_URL"),
        description="Redis holding the ingest streams, buffers, batches and the Celery broker.",
    )
    namespace: str = Field(default="ctw", description="Prefix of every Redis key this project owns.")
    shards: Annotated[int, Field(ge=1, le=256)] = Field(
        default=4, description="Ingest stream shards; a counter always maps to the same one. Fixed per deployment."
    )

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
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

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        if not _NAMESPACE_RE.match(value):
            raise ValueError("must be 1-32 lowercase letters, digits, '_' or '-', starting with a letter")
        return value
