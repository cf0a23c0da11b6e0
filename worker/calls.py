"""The call event: one validated model for every column of Metrica's calls CSV.

``CallEvent`` checks shape and per-field rules; :func:`check_time` adds the rules that depend on
"now" (future calls, the join window). :func:`validate_calls` runs both over many raw events and
returns accepted events and rejections that name the field and the rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from worker.currencies import ISO_4217
from worker.kinds import Bucket, IdType, UploadKind

_DIGITS_RE = re.compile(r"^[0-9]{1,64}$")
_PHONE_STRIP_RE = re.compile(r"[\s\-().]")
_CALL_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
_PROVIDER_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_MAX_TEXT = 1000
_MAX_URL = 2048


@dataclass(frozen=True, slots=True)
class FieldError:
    """One broken rule: the field (as the CSV column or model field is named) and what it must be."""

    field: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _strict_int(value: Any) -> Any:
    """Whole numbers only: no bools, no 1.5, no "1.0"."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not a boolean")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be a whole number of seconds")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"-?[0-9]+", text):
            raise ValueError("must be a whole number")
        return int(text)
    return value


def _flag(value: Any) -> Any:
    """A 0/1 flag; accepts booleans, 0/1 and "0"/"1"/"true"/"false"."""
    if value is None or isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in {"0", "1", "true", "false"}:
        return value.strip().lower() in {"1", "true"}
    raise ValueError("must be 0 or 1")


Seconds = Annotated[int, BeforeValidator(_strict_int), Field(ge=0, le=86_400 * 7)]
Flag = Annotated[bool | None, BeforeValidator(_flag)]


class CallEvent(BaseModel):
    """A finished phone call, ready to become one row of a Metrica calls file."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True, str_strip_whitespace=True)

    counter_id: int = Field(gt=0, le=2**63 - 1, description="Metrica counter the call belongs to.")
    call_id: str = Field(description="The provider's own id of the call; repeats are dropped.")
    provider: str = Field(default="api", description="Where the call came from (twilio, zadarma, ...).")

    client_id: str | None = Field(default=None, alias="ClientId")
    user_id: str | None = Field(default=None, alias="UserId", max_length=256)
    yclid: str | None = Field(default=None, alias="Yclid")
    date_time: datetime = Field(alias="DateTime")
    static_call: Flag = Field(default=None, alias="StaticCall")
    price: Decimal | None = Field(default=None, alias="Price")
    currency: str | None = Field(default=None, alias="Currency")
    phone_number: str | None = Field(default=None, alias="PhoneNumber")
    talk_duration: Seconds | None = Field(default=None, alias="TalkDuration")
    hold_duration: Seconds | None = Field(default=None, alias="HoldDuration")
    call_missed: Flag = Field(default=None, alias="CallMissed")
    tag: str | None = Field(default=None, alias="Tag", max_length=_MAX_TEXT)
    first_time_caller: Flag = Field(default=None, alias="FirstTimeCaller")
    url: str | None = Field(default=None, alias="URL", max_length=_MAX_URL)
    call_tracker_url: str | None = Field(default=None, alias="CallTrackerURL", max_length=_MAX_URL)

    @field_validator("call_id")
    @classmethod
    def _check_call_id(cls, value: str) -> str:
        if not _CALL_ID_RE.match(value):
            raise ValueError("must be 1-128 printable ASCII characters without spaces")
        return value

    @field_validator("provider")
    @classmethod
    def _check_provider(cls, value: str) -> str:
        if not _PROVIDER_RE.match(value):
            raise ValueError("must be 1-32 lowercase letters, digits, '_' or '-'")
        return value

    @field_validator("client_id", "yclid")
    @classmethod
    def _check_numeric_id(cls, value: str | None) -> str | None:
        if value is not None and not _DIGITS_RE.match(value):
            raise ValueError("must be digits only")
        return value or None

    @field_validator("user_id")
    @classmethod
    def _check_user_id(cls, value: str | None) -> str | None:
        if value is not None and any(ch in value for ch in "\r\n\x00"):
            raise ValueError("must be one line of text")
        return value or None

    @field_validator("date_time", mode="before")
    @classmethod
    def _parse_date_time(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be Unix seconds or an ISO 8601 time with a zone")
        if isinstance(value, int | float) or (isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip())):
            seconds = int(float(value))
            if seconds < 0:
                raise ValueError("must not be before 1970")
            return datetime.fromtimestamp(seconds, UTC)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise ValueError("must be Unix seconds or an ISO 8601 time with a zone") from None
            return parsed
        return value

    @field_validator("date_time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must carry a time zone (naive times are ambiguous)")
        return value.astimezone(UTC)

    @field_validator("price", mode="before")
    @classmethod
    def _parse_price(cls, value: Any) -> Any:
        if value is None or isinstance(value, Decimal):
            return value
        if isinstance(value, bool):
            raise ValueError("must be a decimal number written with '.'")
        if isinstance(value, int | float):
            return Decimal(str(value))
        if isinstance(value, str):
            text = value.strip()
            if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
                raise ValueError("must be a non-negative decimal number written with '.', as 1500.50")
            try:
                return Decimal(text)
            except InvalidOperation:
                raise ValueError("must be a decimal number written with '.'") from None
        return value

    @field_validator("price")
    @classmethod
    def _check_price(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and (not value.is_finite() or value < 0):
            raise ValueError("must be a non-negative decimal number")
        if value is not None and len(value.as_tuple().digits) > 18:
            raise ValueError("has more than 18 digits")
        return value

    @field_validator("currency")
    @classmethod
    def _check_currency(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        code = value.upper()
        if code not in ISO_4217:
            raise ValueError("must be an ISO 4217 currency code, as RUB or USD")
        return code

    @field_validator("phone_number")
    @classmethod
    def _normalise_phone(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        text = _PHONE_STRIP_RE.sub("", value)
        if text.startswith("+"):
            digits = text[1:]
        elif text.startswith("00"):
            digits = text[2:]
        else:
            digits = text
        if not digits.isdigit() or not 7 <= len(digits) <= 15:
            raise ValueError("must be an international number with country code, 7 to 15 digits, as +70123456789")
        return "+" + digits

    @field_validator("tag")
    @classmethod
    def _check_tag(cls, value: str | None) -> str | None:
        if value is not None and any(ch in value for ch in "\r\n\x00"):
            raise ValueError("must be one line of text")
        return value or None

    @field_validator("url", "call_tracker_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.match(r"^https?://[^\s/?#]+[^\s]*$", value):
            raise ValueError("must be an http:// or https:// URL without spaces")
        return value

    @model_validator(mode="after")
    def _needs_identifier(self) -> CallEvent:
        if not (self.client_id or self.user_id or self.yclid):
            raise PydanticCustomError("identifier_required", "at least one of ClientId, UserId or Yclid is required")
        return self

    # --- Pipeline view -----------------------------------------------------------------------
    @property
    def id_type(self) -> IdType:
        """The identifier the file is keyed by when a call carries several: ClientId, UserId, Yclid."""
        if self.client_id:
            return IdType.CLIENT_ID
        if self.user_id:
            return IdType.USER_ID
        return IdType.YCLID

    @property
    def bucket(self) -> Bucket:
        return Bucket(self.counter_id, UploadKind.CALLS, self.id_type)

    @property
    def dedup_source(self) -> str:
        """What makes two deliveries the same call: counter, provider and the provider's call id."""
        return f"{self.counter_id}\x1f{self.provider}\x1f{self.call_id}"

    def to_row(self) -> dict[str, str]:
        """The call's CSV cells by column name; absent optional columns are left out."""
        identifier = {IdType.CLIENT_ID: self.client_id, IdType.USER_ID: self.user_id, IdType.YCLID: self.yclid}
        row = {self.id_type.column: identifier[self.id_type] or "", "DateTime": str(int(self.date_time.timestamp()))}
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


@dataclass(frozen=True, slots=True)
class TimePolicy:
    """The rules on a call's DateTime that depend on the clock."""

    join_window: timedelta
    clock_skew: timedelta

    @classmethod
    def from_days(cls, join_window_days: int, clock_skew_seconds: int) -> TimePolicy:
        return cls(timedelta(days=join_window_days), timedelta(seconds=clock_skew_seconds))


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
    if event.date_time < now - policy.join_window:
        return [
            FieldError(
                "DateTime",
                "join_window",
                f"is older than the {policy.join_window.days}-day join window; Metrica would not join it to a visit",
            )
        ]
    return []


def field_errors(error: ValidationError) -> list[FieldError]:
    """Pydantic's errors as ``FieldError``s named by CSV column (or model field) and rule."""
    result = []
    for item in error.errors(include_url=False, include_input=False):
        loc = item.get("loc") or ()
        field = ".".join(str(p) for p in loc) if loc else "call"
        if item.get("type") == "identifier_required":
            field = "ClientId|UserId|Yclid"
        message = str(item.get("msg", "is invalid")).removeprefix("Value error, ")
        if item.get("type") == "missing":
            message = "is required"
        elif item.get("type") == "extra_forbidden":
            message = "is not a known field"
        result.append(FieldError(field, str(item.get("type", "invalid")), message))
    return result


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event that was not accepted, by its position in the input, with every broken rule."""

    index: int
    errors: tuple[FieldError, ...]

    @property
    def reason(self) -> str:
        return "; ".join(str(e) for e in self.errors)


def validate_calls(
    raw_events: Iterable[Mapping[str, Any] | CallEvent], now: datetime, policy: TimePolicy
) -> tuple[list[tuple[int, CallEvent]], list[Rejection]]:
    """Validate each event; return (index, event) pairs accepted and the rejections."""
    accepted: list[tuple[int, CallEvent]] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(raw_events):
        try:
            event = raw if isinstance(raw, CallEvent) else CallEvent.model_validate(raw)
        except ValidationError as error:
            rejected.append(Rejection(index, tuple(field_errors(error))))
            continue
        except (TypeError, ValueError) as error:  # not a mapping at all
            rejected.append(Rejection(index, (FieldError("call", "type", f"must be an object ({error})"),)))
            continue
        problems = check_time(event, now, policy)
        if problems:
            rejected.append(Rejection(index, tuple(problems)))
        else:
            accepted.append((index, event))
    return accepted, rejected
