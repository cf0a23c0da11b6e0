"""The call event: one validated model for every column of Metrica's calls CSV.

``CallEvent`` checks shape and per-field rules (shared with conversions in :mod:`worker.model.fields`);
:func:`check_time` adds the rules that depend on "now" (future calls, the join window).
:func:`validate_calls` runs both over many raw events and returns accepted events and rejections that
name the field and the rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import Field

from worker.model.fields import (
    MAX_TEXT,
    FieldError,
    Flag,
    OneLine,
    Phone,
    Rejection,
    Seconds,
    SourceId,
    SourceName,
    TimePolicy,
    UrlText,
    VisitorEvent,
    field_errors,
    validate_events,
)
from worker.model.kinds import Bucket, UploadKind
from worker.model.phones import PhoneRegions

__all__ = ["CallEvent", "FieldError", "Rejection", "TimePolicy", "check_time", "field_errors", "validate_calls"]


class CallEvent(VisitorEvent):
    """A finished phone call, ready to become one row of a Metrica calls file."""

    call_id: SourceId = Field(description="The provider's own id of the call; repeats are dropped.")
    provider: SourceName = Field(default="api", description="Where the call came from (twilio, zadarma, ...).")

    static_call: Flag = Field(default=None, alias="StaticCall")
    phone_number: Phone = Field(default=None, alias="PhoneNumber")
    talk_duration: Seconds | None = Field(default=None, alias="TalkDuration")
    hold_duration: Seconds | None = Field(default=None, alias="HoldDuration")
    call_missed: Flag = Field(default=None, alias="CallMissed")
    tag: OneLine = Field(default=None, alias="Tag", max_length=MAX_TEXT)
    first_time_caller: Flag = Field(default=None, alias="FirstTimeCaller")
    url: UrlText = Field(default=None, alias="URL")
    call_tracker_url: UrlText = Field(default=None, alias="CallTrackerURL")

    # --- Pipeline view -----------------------------------------------------------------------
    @property
    def bucket(self) -> Bucket:
        return Bucket(self.counter_id, UploadKind.CALLS, self.id_type)

    @property
    def source_id(self) -> str:
        return self.call_id

    @property
    def dedup_source(self) -> str:
        """What makes two deliveries the same call: counter, provider and the provider's call id."""
        return f"{self.counter_id}\x1f{self.provider}\x1f{self.call_id}"

    def to_row(self) -> dict[str, str]:
        """The call's CSV cells by column name; absent optional columns are left out."""
        row = {self.id_type.column: self.identifier, "DateTime": str(int(self.date_time.timestamp()))}
        for column, value in (
            ("StaticCall", self.static_call),
            ("CallMissed", self.call_missed),
            ("FirstTimeCaller", self.first_time_caller),
        ):
            if value is not None:
                row[column] = "1" if value else "0"
        if self.price is not None:
            row["Price"] = format(self.price, "f")
        for column, text in (
            ("Currency", self.currency),
            ("PhoneNumber", self.phone_number),
            ("Tag", self.tag),
            ("URL", self.url),
            ("CallTrackerURL", self.call_tracker_url),
        ):
            if text is not None:
                row[column] = text
        for column, number in (("TalkDuration", self.talk_duration), ("HoldDuration", self.hold_duration)):
            if number is not None:
                row[column] = str(number)
        return row


def check_time(event: CallEvent, now: datetime, policy: TimePolicy) -> list[FieldError]:
    """Errors for a DateTime in the future (beyond the skew) or older than the join window."""
    if event.date_time > now + policy.clock_skew:
        return [
            FieldError(
                "DateTime",
                "not_in_future",
                f"must not be in the future (more than {int(policy.clock_skew.total_seconds())} s ahead of now)",
            )
        ]
    too_old = policy.too_old(event.date_time, now)
    if too_old is None or (policy.late_static and event.static_call):
        return []
    return [too_old]


def validate_calls(
    raw_events: Iterable[object], now: datetime, policy: TimePolicy, regions: PhoneRegions | None = None
) -> tuple[list[tuple[int, CallEvent]], list[Rejection]]:
    """Validate each call; return (index, event) pairs accepted and the rejections."""
    context = (regions or PhoneRegions()).context()
    return validate_events(CallEvent, raw_events, now, lambda event, at: check_time(event, at, policy), context)
