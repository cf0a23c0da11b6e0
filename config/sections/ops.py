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

    # --- Logging -----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
