"""All configuration, read once from the environment (prefix ``CALLTRACK_``) and ``.env``.

A wrong value stops the process with one line naming the variable: see :func:`load_settings`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "CALLTRACK_"
REAL_METRICA_URL = "https://api-metrika.yandex.net"
# The token the bundled emulator accepts out of the box (emulator/example.toml); not a secret.
EMULATOR_DEMO_TOKEN = "demo-token"  # noqa: S105

_NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_REDIS_SCHEMES = {"redis", "rediss", "unix"}

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """Every knob of the worker, the producers and the tasks. Secrets are ``SecretStr``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # --- Redis -------------------------------------------------------------------------------
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("CALLTRACK_REDIS_URL", "REDIS_URL"),
        description="Redis holding the ingest streams, buffers, batches and the Celery broker.",
    )
    namespace: str = Field(default="ctw", description="Prefix of every Redis key this project owns.")
    shards: Annotated[int, Field(ge=1, le=256)] = Field(
        default=4, description="Ingest stream shards; a counter always maps to the same one. Fixed per deployment."
    )

    # --- Batching ----------------------------------------------------------------------------
    flush_max_rows: PositiveInt = Field(default=50_000, description="Seal a batch at this many rows.")
    flush_max_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=16 * 1024 * 1024, description="Seal a batch before its rows exceed this many bytes."
    )
    flush_max_age: PositiveFloat = Field(
        default=60.0, description="Seal a batch this many seconds after its first row."
    )
    drain_chunk: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=5_000, description="Stream entries moved into buffers per Redis script call."
    )
    drain_time_budget: PositiveFloat = Field(
        default=5.0, description="Seconds one drain task keeps draining a backlog."
    )

    # --- Validation of incoming calls --------------------------------------------------------
    join_window_days: PositiveInt = Field(
        default=21, description="Calls older than this are rejected (Metrica joins within 21 days)."
    )
    clock_skew_seconds: NonNegativeInt = Field(
        default=300, description="How far in the future a call's DateTime may be."
    )
    dedup_window_days: PositiveInt = Field(
        default=22, description="How long a provider call id is remembered to drop repeats."
    )

    # --- Metrica -----------------------------------------------------------------------------
    metrica_base_url: HttpUrl | None = Field(
        default=None, description="API root. Default: the real API when a token is set, else the local emulator."
    )
    emulator_url: HttpUrl = Field(
        default=HttpUrl("http://127.0.0.1:8765"), description="Where the bundled emulator listens."
    )
    metrica_token: SecretStr | None = Field(default=None, description="OAuth token for counters without their own.")
    metrica_counter_tokens: Annotated[dict[int, SecretStr], NoDecode] = Field(
        default_factory=dict,
        description='Per-counter OAuth tokens, "counter=token,counter=token" or a JSON object.',
    )
    http_connect_timeout: PositiveFloat = 5.0
    http_read_timeout: PositiveFloat = 60.0
    http_write_timeout: PositiveFloat = 60.0
    http_pool_timeout: PositiveFloat = 10.0
    new_goal_name: str | None = Field(
        default=None, max_length=255, description="Calls goal to create if a counter has none."
    )

    # --- Tasks -------------------------------------------------------------------------------
    drain_interval: PositiveFloat = Field(default=1.0, description="Seconds between beat-triggered drains.")
    reconcile_interval: PositiveFloat = Field(default=10.0, description="Seconds between status reconciliations.")
    upload_lock_seconds: PositiveInt = Field(
        default=180, description="Lease of a counter's upload lock; longer than the slowest upload request."
    )
    upload_max_retries: NonNegativeInt = Field(default=8, description="Retries of a failing upload before quarantine.")
    redispatch_after: PositiveFloat = Field(
        default=120.0, description="Seconds after which a sealed batch with no upload is sent to the upload task again."
    )
    rows_retention_seconds: PositiveInt = Field(
        default=7 * 24 * 3600, description="How long a final batch keeps its rows in Redis for inspection."
    )

    # --- Logging -----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

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

    @field_validator("metrica_counter_tokens", mode="before")
    @classmethod
    def _parse_counter_tokens(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            try:
                return json.loads(text)
            except ValueError:
                raise ValueError('is not valid JSON; use {"counter": "token"} or counter=token,...') from None
        pairs: dict[str, str] = {}
        for item in text.split(","):
            counter, sep, token = item.partition("=")
            if not sep or not counter.strip() or not token.strip():
                # Never echo the item: it holds a token.
                raise ValueError("must be counter=token pairs separated by commas")
            pairs[counter.strip()] = token.strip()
        return pairs

    @field_validator("metrica_counter_tokens")
    @classmethod
    def _check_counters(cls, value: dict[int, SecretStr]) -> dict[int, SecretStr]:
        if any(counter <= 0 for counter in value):
            raise ValueError("counter ids must be positive integers")
        return value

    @model_validator(mode="after")
    def _check_flush(self) -> Settings:
        if self.upload_lock_seconds <= self.http_read_timeout + self.http_connect_timeout:
            raise ValueError(
                "CALLTRACK_UPLOAD_LOCK_SECONDS must exceed the HTTP connect plus read timeout, "
                "or a slow upload could outlive its lock"
            )
        return self

    # --- Derived -----------------------------------------------------------------------------
    @property
    def uses_emulator(self) -> bool:
        """True when no real token is configured: uploads go to the bundled emulator."""
        return self.metrica_token is None and not self.metrica_counter_tokens

    @property
    def api_base_url(self) -> str:
        if self.metrica_base_url is not None:
            return str(self.metrica_base_url).rstrip("/")
        return str(self.emulator_url).rstrip("/") if self.uses_emulator else REAL_METRICA_URL

    def token_for(self, counter_id: int) -> SecretStr | None:
        """The OAuth token that may upload to ``counter_id`` (its own, else the default)."""
        token = self.metrica_counter_tokens.get(counter_id, self.metrica_token)
        if token is None and self.uses_emulator:
            return SecretStr(EMULATOR_DEMO_TOKEN)
        return token

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log scrubber."""
        secrets = [t.get_secret_value() for t in self.metrica_counter_tokens.values()]
        if self.metrica_token is not None:
            secrets.append(self.metrica_token.get_secret_value())
        return [s for s in secrets if len(s) >= 4]


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"


def describe_error(error: ValidationError) -> str:
    """One line naming each offending variable and the rule it broke; never the value."""
    parts = []
    for item in error.errors():
        loc = item.get("loc") or ()
        field = str(loc[0]) if loc else ""
        name = field if field.startswith(ENV_PREFIX) else env_name(field)
        if name == env_name("redis_url"):
            name = f"{name} (or REDIS_URL)"
        message = str(item.get("msg", "is invalid")).removeprefix("Value error, ")
        if not field:
            parts.append(message)
        else:
            parts.append(f"{name}: {message}")
    return "invalid configuration: " + "; ".join(parts)


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Read and validate the settings, or exit with status 2 and one clear line on stderr."""
    try:
        return Settings(_env_file=env_file)
    except ValidationError as error:
        print(describe_error(error), file=sys.stderr)
        raise SystemExit(2) from None
