"""Field rules shared by every event kind (calls, offline conversions), and how errors are reported.

Each rule is an ``Annotated`` type, so a model states its columns and the rules come with them.
Messages name the rule in words; :func:`field_errors` turns pydantic's errors into ``FieldError``s
named by CSV column. :func:`validate_events` runs a model and its clock-dependent checks over many
raw events.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from worker.model.currencies import ISO_4217
from worker.model.kinds import IdType
from worker.model.phones import phone_rule

_DIGITS_RE = re.compile(r"^[0-9]{1,64}$")
_SOURCE_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
_SOURCE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_URL_RE = re.compile(r"^https?://[^\s/?#]+[^\s]*$")
# C0 and C1 controls (ESC, NUL, CR, LF, NEL U+0085 ...), DEL, the Unicode line and paragraph separators
# and the bidirectional overrides: none belongs in a CSV cell, a log line or a terminal.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
CONTROL_MESSAGE = "must not contain control characters or Unicode line separators"
MAX_TEXT = 1000
MAX_URL = 2048


@dataclass(frozen=True, slots=True)
class FieldError:
    """One broken rule: the field (as the CSV column or model field is named) and what it must be."""

    field: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event that was not accepted, by its position in the input, with every broken rule."""

    index: int
    errors: tuple[FieldError, ...]

    @property
    def reason(self) -> str:
        return "; ".join(str(e) for e in self.errors)


@dataclass(frozen=True, slots=True)
class TimePolicy:
    """The rules on an event's DateTime that depend on the clock."""

    join_window: timedelta
    clock_skew: timedelta
    #: A static call older than the join window is still uploaded (Metrica shows static calls in its
    #: call reports without joining them to a visit): the ``static`` choice of ``late_calls``.
    late_static: bool = False

    @classmethod
    def from_days(cls, join_window_days: int, clock_skew_seconds: int, *, late_static: bool = False) -> TimePolicy:
        return cls(timedelta(days=join_window_days), timedelta(seconds=clock_skew_seconds), late_static)

    def too_old(self, when: datetime, now: datetime) -> FieldError | None:
        if when < now - self.join_window:
            return FieldError(
                "DateTime",
                "join_window",
                f"is older than the {self.join_window.days}-day join window; Metrica would not join it to a visit",
            )
        return None


# --- parsers -------------------------------------------------------------------------------------
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


def _parse_date_time(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be Unix seconds or an ISO 8601 time with a zone")
    if isinstance(value, int | float) or (isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip())):
        seconds = int(float(value))
        if seconds < 0:
            raise ValueError("must not be before 1970")
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be Unix seconds or an ISO 8601 time with a zone") from None
    return value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a time zone (naive times are ambiguous)")
    return value.astimezone(UTC)


def _parse_price(value: Any) -> Any:
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise ValueError("must be a decimal number written with '.'")
    if isinstance(value, int | float):
        return Decimal(str(value))
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return None
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
            raise ValueError("must be a non-negative decimal number written with '.', as 1500.50")
        try:
            return Decimal(text)
        except InvalidOperation:
            raise ValueError("must be a decimal number written with '.'") from None
    return value


def _check_price(value: Decimal | None) -> Decimal | None:
    if value is not None and (not value.is_finite() or value < 0):
        raise ValueError("must be a non-negative decimal number")
    if value is not None and len(value.as_tuple().digits) > 18:
        raise ValueError("has more than 18 digits")
    return value


def _currency(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    code = value.upper()
    if code not in ISO_4217:
        raise ValueError("must be an ISO 4217 currency code, as RUB or USD")
    return code


def _digits(value: str | None) -> str | None:
    if value is not None and value != "" and not _DIGITS_RE.fullmatch(value):
        raise ValueError("must be digits only")
    return value or None


def has_control(value: str) -> bool:
    """``value`` holds a control character, a Unicode line separator or a bidirectional override."""
    return _CONTROL_RE.search(value) is not None


def _no_control(value: str | None) -> None:
    if value is not None and has_control(value):
        raise PydanticCustomError("control_character", CONTROL_MESSAGE)


def _one_line(value: str | None) -> str | None:
    _no_control(value)
    return value or None


def _url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    _no_control(value)
    if not _URL_RE.fullmatch(value):
        raise ValueError("must be an http:// or https:// URL without spaces")
    return value


def _source_id(value: str) -> str:
    if not _SOURCE_ID_RE.fullmatch(value):
        raise ValueError("must be 1-128 printable ASCII characters without spaces")
    return value


def _source(value: str) -> str:
    if not _SOURCE_RE.fullmatch(value):
        raise ValueError("must be 1-32 lowercase letters, digits, '_' or '-'")
    return value


# --- field types ---------------------------------------------------------------------------------
Seconds = Annotated[int, BeforeValidator(_strict_int), Field(ge=0, le=86_400 * 7)]
Flag = Annotated[bool | None, BeforeValidator(_flag)]
UtcDateTime = Annotated[datetime, BeforeValidator(_parse_date_time), AfterValidator(_utc)]
Price = Annotated[Decimal | None, BeforeValidator(_parse_price), AfterValidator(_check_price)]
Currency = Annotated[str | None, AfterValidator(_currency)]
DigitsId = Annotated[str | None, AfterValidator(_digits)]
OneLine = Annotated[str | None, AfterValidator(_one_line)]
UrlText = Annotated[str | None, Field(max_length=MAX_URL), AfterValidator(_url)]
SourceId = Annotated[str, AfterValidator(_source_id)]
SourceName = Annotated[str, AfterValidator(_source)]
Phone = Annotated[str | None, AfterValidator(phone_rule)]


class Visitor(BaseModel):
    """Metrica's visitor identifiers, at least one of which must be given."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True, str_strip_whitespace=True)
    identifier_rule: ClassVar[tuple[str, str]] = (
        "identifier_required",
        "at least one of ClientId, UserId or Yclid is required",
    )

    client_id: DigitsId = Field(default=None, alias="ClientId")
    user_id: OneLine = Field(default=None, alias="UserId", max_length=256)
    yclid: DigitsId = Field(default=None, alias="Yclid")

    #: The identifier types in the order that picks a file's type when an event carries several.
    id_types: ClassVar[tuple[IdType, ...]] = (IdType.CLIENT_ID, IdType.USER_ID, IdType.YCLID)

    def identifiers(self) -> tuple[str | None, ...]:
        """The identifier values, in the order of ``id_types``."""
        return (self.client_id, self.user_id, self.yclid)

    @property
    def id_type(self) -> IdType:
        """The identifier the file is keyed by: the first of ``id_types`` the event carries."""
        return next(t for t, v in zip(self.id_types, self.identifiers(), strict=True) if v)

    @property
    def identifier(self) -> str:
        return next((v for v in self.identifiers() if v), "")

    @model_validator(mode="after")
    def _needs_identifier(self) -> Self:
        if not any(self.identifiers()):
            raise PydanticCustomError(*self.identifier_rule)
        return self


class VisitorEvent(Visitor):
    """What every uploaded row has: a counter, the visitor identifiers, a time, an optional value."""

    counter_id: int = Field(gt=0, le=2**63 - 1, description="Metrica counter the event belongs to.")
    date_time: UtcDateTime = Field(alias="DateTime")
    price: Price = Field(default=None, alias="Price")
    currency: Currency = Field(default=None, alias="Currency")


# --- errors --------------------------------------------------------------------------------------
_FIELD_OF_TYPE = {
    "identifier_required": "ClientId|UserId|Yclid",
    "conversion_identifier_required": "ClientId|UserId|Yclid|PurchaseId",
}


def field_errors(error: ValidationError) -> list[FieldError]:
    """Pydantic's errors as ``FieldError``s named by CSV column (or model field) and rule."""
    result = []
    for item in error.errors(include_url=False, include_input=False):
        loc = item.get("loc") or ()
        kind = str(item.get("type", "invalid"))
        field = _FIELD_OF_TYPE.get(kind) or (".".join(str(p) for p in loc) if loc else "event")
        message = str(item.get("msg", "is invalid")).removeprefix("Value error, ")
        if kind == "missing":
            message = "is required"
        elif kind == "extra_forbidden":
            message = "is not a known field"
        result.append(FieldError(field, kind, message))
    return result


Model = TypeVar("Model", bound=BaseModel)


def validate_events(
    model: type[Model],
    raw_events: Iterable[object],
    now: datetime,
    time_check: Callable[[Model, datetime], list[FieldError]],
    context: dict[str, Any] | None = None,
) -> tuple[list[tuple[int, Model]], list[Rejection]]:
    """Validate each event with ``model`` and ``time_check``; return accepted (index, event) pairs
    and the rejections."""
    accepted: list[tuple[int, Model]] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(raw_events):
        try:
            event = raw if isinstance(raw, model) else model.model_validate(raw, context=context)
        except ValidationError as error:
            rejected.append(Rejection(index, tuple(field_errors(error))))
            continue
        except (TypeError, ValueError) as error:  # not a mapping at all
            rejected.append(Rejection(index, (FieldError("event", "type", f"must be an object ({error})"),)))
            continue
        problems = time_check(event, now)
        if problems:
            rejected.append(Rejection(index, tuple(problems)))
        else:
            accepted.append((index, event))
    return accepted, rejected
