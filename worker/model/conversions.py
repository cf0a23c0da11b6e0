"""Offline conversions: the second upload kind (orders paid, CRM deals closed).

``ConversionEvent`` is one row of Metrica's offline-conversions file: an identifier (``ClientId``,
``UserId``, ``Yclid`` or ``PurchaseId``), a goal ``Target``, a ``DateTime`` strictly in the past, and
optional ``Price`` and ``Currency``. It flows through the same streams, buffers, batches, uploads,
quotas and reconciliation as calls; only its columns and endpoints differ (``worker/model/kinds.py``).

:class:`CallConversions` records a conversion for a call ingested earlier, by the call's provider
and id: the counter and the visitor identifier come from the call (kept for the dedup window).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import ClassVar

from pydantic import Field, field_validator

from worker.model.fields import (
    FieldError,
    OneLine,
    Rejection,
    SourceId,
    SourceName,
    TimePolicy,
    VisitorEvent,
    validate_events,
)
from worker.model.kinds import Bucket, IdType, UploadKind

_TARGET_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,255}$")


class ConversionEvent(VisitorEvent):
    """An offline conversion, ready to become one row of a Metrica offline-conversions file."""

    conversion_id: SourceId = Field(description="The source's own id of the conversion; repeats are dropped.")
    source: SourceName = Field(default="api", description="Where it came from (crm, shop, api, ...).")
    purchase_id: OneLine = Field(default=None, alias="PurchaseId", max_length=256)
    target: str = Field(alias="Target", description="Goal identifier (a JavaScript-event goal).")

    @field_validator("target")
    @classmethod
    def _check_target(cls, value: str) -> str:
        if not _TARGET_RE.fullmatch(value):
            raise ValueError("must be a goal identifier: 1-255 Latin letters, digits, '_', '-' or '.'")
        return value

    identifier_rule: ClassVar[tuple[str, str]] = (
        "conversion_identifier_required",
        "at least one of ClientId, UserId, Yclid or PurchaseId is required",
    )

    id_types: ClassVar[tuple[IdType, ...]] = (IdType.CLIENT_ID, IdType.USER_ID, IdType.YCLID, IdType.PURCHASE_ID)

    def identifiers(self) -> tuple[str | None, ...]:
        return (*super().identifiers(), self.purchase_id)

    @property
    def bucket(self) -> Bucket:
        return Bucket(self.counter_id, UploadKind.CONVERSIONS, self.id_type)

    @property
    def source_id(self) -> str:
        return self.conversion_id

    @property
    def dedup_source(self) -> str:
        """What makes two deliveries the same conversion: counter, source and the source's id."""
        return f"conversion\x1f{self.counter_id}\x1f{self.source}\x1f{self.conversion_id}"

    def to_row(self) -> dict[str, str]:
        row = {
            self.id_type.column: self.identifier,
            "Target": self.target,
            "DateTime": str(int(self.date_time.timestamp())),
        }
        if self.price is not None:
            row["Price"] = format(self.price, "f")
        if self.currency is not None:
            row["Currency"] = self.currency
        return row


def check_conversion_time(event: ConversionEvent, now: datetime, policy: TimePolicy) -> list[FieldError]:
    """Metrica refuses a conversion whose DateTime is not in the past; older than the window is useless."""
    if event.date_time >= now:
        return [FieldError("DateTime", "in_past", "must be in the past (Metrica refuses future conversions)")]
    too_old = policy.too_old(event.date_time, now)
    return [too_old] if too_old else []


def validate_conversions(
    raw_events: Iterable[object], now: datetime, policy: TimePolicy
) -> tuple[list[tuple[int, ConversionEvent]], list[Rejection]]:
    """Validate each conversion; return (index, event) pairs accepted and the rejections."""
    return validate_events(ConversionEvent, raw_events, now, lambda event, at: check_conversion_time(event, at, policy))
