"""Operations: Flower, the metrics exporter, heartbeats and logging."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr


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
        default=10.0, description="Seconds a webhook delivery may take before it counts as failed."
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

    # --- Logging -----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
