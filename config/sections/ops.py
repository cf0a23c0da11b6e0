"""Operations: Flower, the metrics exporter, heartbeats and logging."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from config.sections.common import parse_list


class OpsSettings(BaseModel):
    """What operators look at: Flower, metrics, health probes, logs."""

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
    metrics_address: str = Field(default="127.0.0.1", description="Address of python -m worker.ops.exporter.")
    metrics_port: Annotated[int, Field(ge=1, le=65535)] = Field(default=9108, description="Its port.")
    heartbeat_interval: Annotated[float, Field(ge=0.2, le=60)] = Field(
        default=5.0, description="Seconds between worker and beat heartbeats (health probes allow 3 missed)."
    )
    heartbeat_dir: str = Field(
        default="", description="Folder of the local heartbeat files liveness probes read (default: the temp dir)."
    )

    # --- Status API, console, webhooks (issue 19) ---------------------------------------------
    status_api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the status API (/v1/calls/{provider}/{id}, /v1/counters/...). Without it "
        "the admin API's token (CALLTRACK_ADMIN_API_TOKEN) is accepted; with neither the status API answers 404.",
    )
    console_password: SecretStr | None = Field(
        default=None,
        description="Password of the operator console (/console/, user CALLTRACK_CONSOLE_USER); without it the "
        "console answers 404 (no other credential opens it).",
    )
    console_user: str = Field(default="admin", pattern=r"^[^:\s]{1,64}$", description="The console's user name.")
    console_session_seconds: Annotated[int, Field(ge=60, le=7 * 86_400)] = Field(
        default=8 * 3600, description="How long a console login lasts (a server-side session in Redis; logout ends it)."
    )
    console_secure_cookie: bool = Field(
        default=False, description="Send the console's session cookie only over HTTPS (set it behind TLS)."
    )
    webhook_timeout: Annotated[float, Field(gt=0, le=60)] = Field(
        default=10.0,
        description="Seconds one webhook delivery may take in all, connect to the last byte read (one deadline, "
        "not per read); past it the delivery fails and is retried.",
    )
    webhook_max_response_bytes: Annotated[int, Field(ge=0, le=16 * 1024 * 1024)] = Field(
        default=64 * 1024,
        description="Most bytes of a receiver's answer body read; the connection is closed after them.",
    )
    webhook_task_time_limit: Annotated[int, Field(ge=5, le=600)] = Field(
        default=60,
        description="Celery hard time limit of one delivery task, in seconds (the soft limit is 5 s less); a "
        "backstop above CALLTRACK_WEBHOOK_TIMEOUT.",
    )
    webhook_allowed_networks: Annotated[list[IPvAnyNetwork], NoDecode] = Field(
        default_factory=list,
        description="Networks a webhook may point to although they are not public (loopback, private, link-local, "
        "CGNAT, unique-local...), comma-separated CIDRs; empty: only public addresses.",
    )
    webhook_breaker_failures: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=5,
        description="Consecutive failed deliveries to one account's receiver that open its circuit breaker.",
    )
    webhook_breaker_seconds: Annotated[float, Field(ge=1, le=86_400)] = Field(
        default=300.0,
        description="How long an open breaker pauses the account's deliveries before one probe is let through.",
    )
    webhook_secret_overlap_seconds: Annotated[int, Field(ge=0, le=30 * 86_400)] = Field(
        default=7 * 86_400,
        description="After a webhook secret changes, how long the previous one still signs too (two "
        "signatures), so receivers can switch without losing deliveries.",
    )
    worker_queues: Literal["all", "main", "notify"] = Field(
        default="all",
        description="What this worker consumes: main (drain, upload, reconcile, their periodic ticks), notify (webhook "
        "deliveries and the webhook sweep only: their own pool, so a slow receiver never holds a main worker) or all "
        "(one pool, for development).",
    )
    webhook_max_retries: Annotated[int, Field(ge=0, le=50)] = Field(
        default=8,
        description="Retries of a failed webhook delivery (exponential back-off with jitter) before it is "
        "kept as a dead letter (ctl notify dead, the console).",
    )
    webhook_sweep_interval: Annotated[float, Field(ge=0.2, le=600)] = Field(
        default=2.0,
        description="Seconds between two looks for final statuses and held calls to notify (calltrack.notify_sweep).",
    )
    webhook_backoff_max: Annotated[int, Field(ge=1, le=3_000)] = Field(
        default=600,
        description="Longest wait between two webhook retries, in seconds (a retry is a Celery countdown, kept "
        "well below the broker's visibility timeout).",
    )

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        return parse_list(value)

    @model_validator(mode="after")
    def _task_limit_above_deadline(self) -> OpsSettings:
        if self.webhook_task_time_limit < self.webhook_timeout + 10:
            raise ValueError("webhook_task_time_limit must be at least webhook_timeout + 10 seconds")
        return self

    # --- Logging -----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
