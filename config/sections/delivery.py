"""Delivery: batching, call validation windows, the Metrica API, tasks and the fleet-wide quotas."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, HttpUrl, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from config.sections.common import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, parse_pairs


class DeliverySettings(BaseModel):
    """Everything between the stream and a final Metrica status."""

    # --- Batching ----------------------------------------------------------------------------
    flush_max_rows: PositiveInt = Field(default=50_000, description="Seal a batch at this many rows.")
    flush_max_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=16 * 1024 * 1024, description="Seal a batch before its rows exceed this many bytes."
    )
    flush_max_age: PositiveFloat = Field(
        default=60.0, description="Seal a batch this many seconds after its first row."
    )
    drain_chunk: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=5_000,
        description="Events moved into buffers per Redis script call, about: whole stream entries (one bucket's "
        "events of a producer chunk each) until this many.",
    )
    drain_time_budget: PositiveFloat = Field(
        default=5.0, description="Seconds one drain task keeps draining a backlog."
    )

    # --- Redis memory -------------------------------------------------------------------------
    producer_memory_watermark: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.8,
        description="Producers refuse new calls (retryable, ingestion answers 503) while Redis's used memory is at "
        "or above this share of maxmemory, so uploads, status records and lock releases always have room.",
    )
    memory_check_seconds: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0, description="How long a producer reuses one reading of Redis's memory (INFO memory)."
    )

    producer_durability: Literal["none", "replica", "aof"] = Field(
        default="none",
        description="When a producer reports calls accepted, and when an uploader may post a batch it marked "
        "UPLOADING: none (Redis holds the writes in memory; the AOF policy decides the rest), replica (WAIT: a "
        "replica holds them too), aof (WAITAOF 1 0: fsynced to the local AOF; needs Redis 7.2 or later).",
    )
    producer_durability_replicas: PositiveInt = Field(
        default=1, description="With producer_durability=replica: how many replicas must hold the calls."
    )
    producer_durability_timeout: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0, description="Seconds a producer waits for the replica or AOF acknowledgement before failing."
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
    dedup_period_days: Annotated[int, Field(ge=1, le=31)] = Field(
        default=8,
        description="Dedup marks and call refs live in bucketed hashes, one per shard, period of this many "
        "days and bucket, expiring whole (dedup window after the period ends): a lookup reads one hash per "
        "period of the window (3-4 at 8 days), so shorter periods cost Redis CPU, longer ones memory.",
    )
    restore_check: bool = Field(
        default=True,
        description="Before a counter's first post after a start or a Redis restart, list its uploads and "
        "hold the shard when Metrica holds batches the store forgot (a restore from a backup; ctl restore).",
    )
    dedup_buckets: Annotated[int, Field(ge=1, le=1_048_576)] = Field(
        default=1024,
        description="Hashes per shard and period at least (each period takes max(this, the previous "
        "period's marks / 100)): about 100 marks a hash keeps it in Redis's compact listpack encoding "
        "(hash-max-listpack-entries 128). Size it to a period's calls per shard / 100 for a new deployment.",
    )
    late_calls: Literal["hold", "static", "drop"] = Field(
        default="hold",
        description="A call older than the join window: hold it (reason too_old), upload it as a static "
        "call (Metrica shows it in call reports without a visit), or drop it (counted in the metrics).",
    )
    phone_region: str | None = Field(
        default="RU",
        description="Numbering plan (ISO 3166 code) of phone numbers written without a country code, "
        "as 8 (912) 345-67-89; empty: such numbers are read as international.",
    )
    phone_regions: Annotated[dict[int, str], NoDecode] = Field(
        default_factory=dict, description='Numbering plan per counter, "counter=RU,counter=KZ" or a JSON object.'
    )

    # --- Metrica -----------------------------------------------------------------------------
    metrica_base_url: HttpUrl | None = Field(
        default=None,
        description="API root. Default: the real API, or the emulator when metrica_emulator is set and no token is.",
    )
    metrica_emulator: bool = Field(
        default=False,
        description="Upload to the bundled emulator (emulator_url) while no Metrica token is configured: the "
        "standalone mode and the tests set it. Without it, a counter with no token keeps its batches SEALED "
        "and waiting (logged, parked) instead of posting them anywhere.",
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
    counter_setup: Literal["apply", "check", "off"] = Field(
        default="apply",
        description="Before a counter's first upload: switch on its offline-data options and create the goals "
        "conversion Targets need (apply), only report what is missing (check), or leave the counter alone (off).",
    )
    metrica_unified_endpoint: bool = Field(
        default=False,
        description="Post calls and conversions to the unified offline_conversions/upload?type=CALLS|BASIC and read "
        "them under uploadings instead of the documented upload_calls / upload endpoints. Metrica documents "
        "no columns, status path or list entries for type=CALLS: use it only where Metrica confirmed it.",
    )
    metrica_legacy_endpoints: bool | None = Field(
        default=None,
        description="Deprecated, no effect (a warning is logged): the documented per-kind endpoints are the "
        "default now; CALLTRACK_METRICA_UNIFIED_ENDPOINT opts into the unified one.",
    )
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
    record_retention_seconds: PositiveInt = Field(
        default=30 * 24 * 3600,
        description="How long the record of a batch in a final state (PROCESSED, LINKAGE_FAILURE, REPLAYED, "
        "DISCARDED) is kept; then it expires and leaves the done index. At least rows_retention_seconds.",
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
        default=500,
        description="Ignored since issue 24: Metrica counts reads (client_read) and writes (client_write) each "
        "against its own daily budget, so polls never spend the uploads' budget. Kept so old settings still load.",
    )
    counter_join_wait: Literal["hold", "warn"] = Field(
        default="hold",
        description="A counter whose extended-window option this worker just switched on: keep its data until "
        "counter_join_wait_seconds have passed (hold), or upload it with a warning (warn).",
    )
    counter_join_wait_seconds: NonNegativeFloat = Field(
        default=86400.0,
        description="How long after switching a counter's option on its data waits (Metrica advises about a day).",
    )
    counter_setup_deadline_seconds: Annotated[int, Field(ge=5, le=3600)] = Field(
        default=120, description="Soft time limit of one counter-setup task (its own task, never an upload's)."
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
    reconcile_first_poll_seconds: NonNegativeFloat = Field(
        default=120.0, description="An upload's status is first asked for this many seconds after it was posted."
    )
    reconcile_missing_limit: PositiveInt = Field(
        default=3,
        description="Not-found answers in a row (404, or another batch's comment) after which an uploaded batch is "
        "quarantined as missing_at_metrica.",
    )
    reconcile_max_backoff: PositiveFloat = Field(
        default=600, description="Longest pause between status checks of one counter."
    )

    @field_validator("metrica_counter_tokens", mode="before")
    @classmethod
    def _parse_counter_tokens(cls, value: object) -> object:
        # Never echo the text: it holds tokens (parse_pairs names only the rule).
        return parse_pairs(value, "counter=token pairs separated by commas, or a JSON object")

    @field_validator("metrica_counter_tokens")
    @classmethod
    def _check_counters(cls, value: dict[int, SecretStr]) -> dict[int, SecretStr]:
        if any(counter <= 0 for counter in value):
            raise ValueError("counter ids must be positive integers")
        return value

    @field_validator("phone_region", mode="before")
    @classmethod
    def _empty_region(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("phone_regions", mode="before")
    @classmethod
    def _parse_regions(cls, value: object) -> object:
        return parse_pairs(value, "counter=region pairs separated by commas, or a JSON object")

    @field_validator("phone_region")
    @classmethod
    def _check_region(cls, value: str | None) -> str | None:
        return None if value is None else _region(value)

    @field_validator("phone_regions")
    @classmethod
    def _check_regions(cls, value: dict[int, str]) -> dict[int, str]:
        if any(counter <= 0 for counter in value):
            raise ValueError("counter ids must be positive integers")
        return {counter: _region(region) for counter, region in value.items()}

    @model_validator(mode="after")
    def _check_retention(self) -> Self:
        if self.record_retention_seconds < self.rows_retention_seconds:
            raise ValueError(
                "CALLTRACK_RECORD_RETENTION_SECONDS must be at least CALLTRACK_ROWS_RETENTION_SECONDS: "
                "a batch's rows must not outlive its record"
            )
        return self

    @model_validator(mode="after")
    def _check_flush(self) -> Self:
        one_request = self.http_connect_timeout + self.http_write_timeout + self.http_read_timeout
        if self.upload_lock_seconds * 0.8 < one_request:
            raise ValueError(
                "CALLTRACK_UPLOAD_LOCK_SECONDS must be at least 1.25 times the HTTP connect + write + read "
                "timeouts: the upload task's soft time limit is 80% of the lock's lease"
            )
        return self


def _region(value: str) -> str:
    """An ISO 3166 region code libphonenumber has a numbering plan for."""
    import phonenumbers  # noqa: PLC0415 - only when a region is configured: most commands never need it

    code = value.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{code[:8]!r} is not a region with a numbering plan; use an ISO 3166 code as RU or KZ")
    return code
