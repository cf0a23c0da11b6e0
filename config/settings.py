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
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
NonNegativeFloat = Annotated[float, Field(ge=0)]
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
    drain_interval: PositiveFloat = Field(
        default=0.5, description="Seconds between beat-triggered drains (a due batch waits at most this long)."
    )
    reconcile_interval: PositiveFloat = Field(default=10.0, description="Seconds between status reconciliations.")
    task_events: bool = Field(
        default=False, description="Send Celery task events from the start (Flower enables them while it runs)."
    )
    beat_lock_seconds: Annotated[int, Field(ge=2)] = Field(
        default=30, description="Lease of the single-beat lock; a standby beat takes over after it lapses."
    )
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

    # --- Metrica quotas (shared by every worker through Redis) ------------------------------
    quota_parallel_per_login: Annotated[int, Field(ge=1, le=3)] = Field(
        default=3, description="Requests of one login in flight at once (Metrica allows 3)."
    )
    quota_requests_per_second: Annotated[int, Field(ge=1, le=30)] = Field(
        default=28, description="Requests per second from one egress IP (Metrica allows 30)."
    )
    quota_daily_per_login: PositiveInt = Field(default=5000, description="Requests of one login per UTC day.")
    quota_polling_reserve: NonNegativeInt = Field(
        default=500, description="Part of the daily budget that only status polling may spend."
    )
    quota_short_fraction: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.1,
        description="Below this share of the upload budget left, buffers seal by size only (batches grow).",
    )
    quota_wait_seconds: Annotated[float, Field(ge=0, le=10)] = Field(
        default=1.0, description="An upload waits this long for a rate or parallel permit before it is retried later."
    )
    egress_id: str = Field(
        default="default", pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="Name of this worker's egress IP."
    )
    upload_max_retry_seconds: PositiveFloat = Field(
        default=6 * 3600, description="After this long failing, a batch is quarantined whatever the retry count."
    )
    final_status_timeout: PositiveFloat = Field(
        default=3 * 3600, description="An upload not final after this long is flagged (Metrica says up to 2 h)."
    )
    reconcile_max_backoff: PositiveFloat = Field(
        default=600, description="Longest pause between status checks of one counter."
    )

    # --- Ingestion service, PBX readers, routing (issue 5) -------------------------------------
    ingest_host: str = Field(default="127.0.0.1", description="Address the ingestion service listens on.")
    ingest_port: Annotated[int, Field(ge=1, le=65535)] = Field(default=8080, description="Its port.")
    ingest_public_url: HttpUrl | None = Field(
        default=None,
        description="Base URL the providers call (as they sign it), e.g. https://calls.example.com; "
        "needed behind a proxy or load balancer for Twilio signatures. Default: the URL the request arrived at.",
    )
    ingest_api_token: SecretStr | None = Field(
        default=None,
        description="When set, the generic call and conversion endpoints require 'Authorization: Bearer <it>'.",
    )
    ingest_max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=64 * 1024, description="Largest body of a single-call request; more is answered 413."
    )
    ingest_max_bulk_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=32 * 1024 * 1024, description="Largest body of a bulk NDJSON request; more is answered 413."
    )
    ingest_max_bulk_lines: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=100_000, description="Most calls in one bulk NDJSON request; more is answered 413."
    )
    routing_cache_seconds: Annotated[float, Field(ge=0)] = Field(
        default=5.0, description="How long a process reuses a routing lookup (0: ask Redis every time)."
    )
    first_caller_days: PositiveInt = Field(
        default=365, description="A caller is FirstTimeCaller=1 unless they called the counter within this many days."
    )
    caller_hash_secret: SecretStr | None = Field(
        default=None,
        description="Key of the hash that stands for a caller number in Redis; set it in production "
        "(without it the hash is unkeyed, and phone numbers are few enough to be guessed from it).",
    )
    twilio_auth_tokens: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict, description='Twilio auth token per account, "ACxxx=token,..." or a JSON object.'
    )
    zadarma_secrets: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        description='Zadarma API secret per account name (the name in the webhook URL), "name=secret,..." or JSON.',
    )
    zadarma_timezone: str = Field(
        default="Europe/Moscow", description="Zone of Zadarma's call_start (the account's zone; IANA name)."
    )
    mango_accounts: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        description='Mango Office API key and salt per account name, "name=key:salt,..." or JSON {"name": "key:salt"}.',
    )
    identifier_fields: Annotated[dict[str, dict[str, str]], NoDecode] = Field(
        default_factory=dict,
        description='Where each provider carries visitor ids, JSON {"asterisk": {"ClientId": "userfield"}, '
        '"twilio": {"ClientId": "SipHeader_X-Client-Id"}, "mango": {"UserId": "customer.id"}}.',
    )
    call_tracker_urls: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: {"twilio": "https://console.twilio.com/us1/monitor/logs/calls/{call_id}"},
        description='CallTrackerURL template per provider with {call_id}, JSON {"zadarma": "https://.../{call_id}"}.',
    )
    asterisk_timezone: str = Field(
        default="UTC", description="Zone of Asterisk CDR times when cdr.conf has usegmtime=no (IANA name)."
    )
    asterisk_usegmtime: bool = Field(default=False, description="cdr.conf usegmtime=yes: CDR times are UTC.")
    asterisk_call_id: Literal["uniqueid", "linkedid"] = Field(
        default="uniqueid", description="CDR field that identifies a call (linkedid: one call per bridged group)."
    )
    asterisk_call_id_prefix: str = Field(
        default="", pattern=r"^[A-Za-z0-9_.:-]{0,32}$", description="Prefix of Asterisk call ids (one per PBX)."
    )
    asterisk_tracking_field: str = Field(
        default="dst",
        pattern=r"^[a-z]{2,20}$",
        description="CDR column holding the tracking number dialled (dst when the dialplan routes by DID).",
    )
    asterisk_contexts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma list of dcontext values whose CDRs are calls (default: all)."
    )
    cdr_csv_columns: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            *("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata"),
            *("start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid", "userfield"),
        ],
        description="Master.csv columns in order (cdr.conf loguniqueid/loguserfield/newcdrcolumns change it).",
    )
    ami_host: str = Field(default="127.0.0.1", description="Asterisk Manager Interface host.")
    ami_port: Annotated[int, Field(ge=1, le=65535)] = Field(default=5038, description="AMI port.")
    ami_username: str = Field(default="calltrack", description="AMI user (manager.conf, read=cdr).")
    ami_secret: SecretStr | None = Field(default=None, description="AMI user's secret.")
    ami_max_backoff: PositiveFloat = Field(default=30.0, description="Longest pause between AMI reconnects.")

    @field_validator("twilio_auth_tokens", "zadarma_secrets", "mango_accounts", mode="before")
    @classmethod
    def _parse_credentials(cls, value: object) -> object:
        return parse_pairs(value, "name=secret pairs separated by commas, or a JSON object")

    @field_validator("mango_accounts")
    @classmethod
    def _check_mango(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            key, sep, salt = secret.get_secret_value().partition(":")
            if not sep or not key or not salt:
                raise ValueError(f"account {name[:32]!r} must be given as key:salt")  # never the value
        return value

    @field_validator("identifier_fields", "call_tracker_urls", mode="before")
    @classmethod
    def _parse_json(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError("must be a JSON object") from None
        return value

    @field_validator("identifier_fields")
    @classmethod
    def _check_identifier_fields(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for provider, fields in value.items():
            unknown = set(fields) - {"ClientId", "UserId", "Yclid"}
            if unknown:
                raise ValueError(f"{provider}: columns must be ClientId, UserId or Yclid, not {sorted(unknown)}")
        return value

    @field_validator("asterisk_contexts", "cdr_csv_columns", mode="before")
    @classmethod
    def _parse_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("pool_fallback_numbers", mode="before")
    @classmethod
    def _parse_fallbacks(cls, value: object) -> object:
        return parse_pairs(value, "counter=number pairs separated by commas, or a JSON object")

    @field_validator("pool_fallback_numbers")
    @classmethod
    def _check_fallbacks(cls, value: dict[int, str]) -> dict[int, str]:
        for counter, number in value.items():
            digits = number.removeprefix("+")
            if counter <= 0 or not number.startswith("+") or not digits.isdigit() or not 7 <= len(digits) <= 15:
                raise ValueError("must map positive counter ids to numbers written +<7-15 digits>")
        return value

    @field_validator("session_allowed_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip().rstrip("/") for item in value.split(",") if item.strip()]
        return value

    @field_validator("zadarma_timezone", "asterisk_timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError("must be an IANA time zone name, as Europe/Moscow or UTC") from None
        return value

    # --- Operations: Flower, metrics, health (issue 6) ----------------------------------------
    flower_address: str = Field(default="127.0.0.1", description="Address Flower listens on.")
    flower_port: Annotated[int, Field(ge=1, le=65535)] = Field(default=5555, description="Flower's port.")
    flower_user: str = Field(default="admin", pattern=r"^[^:\s]{1,64}$", description="Flower's basic-auth user.")
    flower_password: SecretStr | None = Field(
        default=None, description="Flower's basic-auth password; Flower refuses to start without it."
    )
    flower_unauthenticated: bool = Field(
        default=False, description="Let Flower start without a password (only behind your own authentication)."
    )
    metrics_address: str = Field(default="127.0.0.1", description="Address of python -m worker.exporter.")
    metrics_port: Annotated[int, Field(ge=1, le=65535)] = Field(default=9108, description="Its port.")
    heartbeat_interval: Annotated[float, Field(ge=0.2, le=60)] = Field(
        default=5.0, description="Seconds between worker and beat heartbeats (health probes allow 3 missed)."
    )
    heartbeat_dir: str = Field(
        default="", description="Folder of the local heartbeat files liveness probes read (default: the temp dir)."
    )

    # --- Number pools and attribution (dynamic call tracking) ---------------------------------
    pool_lease_seconds: PositiveFloat = Field(
        default=1800, description="How long a session keeps its number after its last page view."
    )
    pool_grace_seconds: NonNegativeFloat = Field(
        default=0, description="A call this long after a lease ended still goes to its session, if unassigned."
    )
    pool_history_days: PositiveInt = Field(
        default=22, description="How long lease history is kept for late attribution (>= the join window)."
    )
    pool_fallback_numbers: Annotated[dict[int, str], NoDecode] = Field(
        default_factory=dict, description='Number shown when a pool is exhausted: "counter=+7495...,..." or JSON.'
    )
    static_label_as_tag: bool = Field(default=True, description="A static number's channel label becomes the Tag.")
    session_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"], description="Origins allowed to call the session API (CORS), comma-separated."
    )
    ingest_trust_forwarded_for: bool = Field(
        default=False, description="Take the client IP from X-Forwarded-For (behind your own load balancer)."
    )
    session_rate_per_ip: PositiveInt = Field(default=20, description="Session API requests per second per client IP.")
    session_rate_per_counter: PositiveInt = Field(
        default=2000, description="Session API requests per second per counter."
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
        one_request = self.http_connect_timeout + self.http_write_timeout + self.http_read_timeout
        if self.upload_lock_seconds * 0.8 < one_request:
            raise ValueError(
                "CALLTRACK_UPLOAD_LOCK_SECONDS must be at least 1.25 times the HTTP connect + write + read "
                "timeouts: the upload task's soft time limit is 80% of the lock's lease"
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
        secrets += ingest_secret_values(self)
        if self.flower_password is not None:
            secrets.append(self.flower_password.get_secret_value())
        if self.ingest_api_token is not None:
            secrets.append(self.ingest_api_token.get_secret_value())
        return [s for s in secrets if len(s) >= 4]


def ingest_secret_values(settings: Settings) -> list[str]:
    """The ingestion secrets (issue 5): provider tokens, API secrets, keys and salts, the caller hash key."""
    values: list[str] = []
    for mapping in (settings.twilio_auth_tokens, settings.zadarma_secrets, settings.mango_accounts):
        for secret in mapping.values():
            values.append(secret.get_secret_value())
            values.extend(secret.get_secret_value().split(":"))  # Mango: key and salt on their own
    for single in (settings.caller_hash_secret, settings.ami_secret):
        if single is not None:
            values.append(single.get_secret_value())
    return values


def parse_pairs(value: object, rule: str) -> object:
    """``a=x,b=y`` or a JSON object as a dict; other types pass through. Errors never echo the text."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError(f"is not valid JSON; use {rule}") from None
    pairs: dict[str, str] = {}
    for item in text.split(","):
        name, sep, secret = item.partition("=")
        if not sep or not name.strip() or not secret.strip():
            raise ValueError(f"must be {rule}")
        pairs[name.strip()] = secret.strip()
    return pairs


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
