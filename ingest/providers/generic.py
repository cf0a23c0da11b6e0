"""The generic JSON format: one call per request, or many as NDJSON (one JSON object per line).

Fields (unknown ones are refused)::

    call_id      the sender's stable id of the call (repeats are dropped)      required
    to           tracking number dialled (decides the counter)                 required
    from         caller number                                                 optional
    start        call start: Unix seconds or ISO 8601 with a zone              required
    answer, end  when it was answered / ended (same formats)                   optional
    answered     true/false; default: answered if ``answer`` or a talk time
    talk_duration, hold_duration   seconds; default derived from start/answer/end
    direction    "in" (default) or "out" (only for numbers with outgoing enabled)
    ClientId, UserId, Yclid, URL, CallTrackerURL, Price, Currency, Tag   Metrica columns as is
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ingest.input import InputError
from worker.model.calls import FieldError, field_errors
from worker.model.inbound import InboundCall, normalize_number

_PASS_THROUGH = ("URL", "CallTrackerURL", "Price", "Currency", "Tag")


def _time(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be Unix seconds or an ISO 8601 time with a zone")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 12):
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be Unix seconds or an ISO 8601 time with a zone") from None
        if parsed.tzinfo is None:
            raise ValueError("must carry a time zone")
        return int(parsed.astimezone(UTC).timestamp())
    raise ValueError("must be Unix seconds or an ISO 8601 time with a zone")


class GenericCall(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)

    call_id: str = Field(min_length=1, max_length=128)
    to: str
    from_: str | None = Field(default=None, alias="from")
    start: int
    answer: int | None = None
    end: int | None = None
    answered: bool | None = None
    talk_duration: int | None = Field(default=None, ge=0, le=7 * 86_400)
    hold_duration: int | None = Field(default=None, ge=0, le=7 * 86_400)
    direction: Literal["in", "out"] = "in"
    ClientId: str | None = None
    UserId: str | None = None
    Yclid: str | None = None
    URL: str | None = None
    CallTrackerURL: str | None = None
    Price: str | int | float | None = None
    Currency: str | None = None
    Tag: str | None = None

    _times = field_validator("start", "answer", "end", mode="before")(lambda v: None if v is None else _time(v))

    @field_validator("to")
    @classmethod
    def _check_to(cls, value: str, info: ValidationInfo) -> str:
        number = normalize_number(value, (info.context or {}).get("region"))
        if number is None:
            raise ValueError("must be the tracking number: a phone number with country code, as +74951234567")
        return number

    @field_validator("from_")
    @classmethod
    def _check_from(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            return None
        number = normalize_number(value, (info.context or {}).get("region"))
        if number is None:
            raise ValueError("must be a phone number with country code, as +79123456789")
        return number


def to_call(data: Any, region: str | None = None) -> InboundCall:
    """The call of one generic JSON object; numbers without a country code are read in ``region``."""
    if not isinstance(data, dict):
        raise InputError.one("call", "type", "must be a JSON object")
    try:
        item = GenericCall.model_validate(data, context={"region": region})
    except ValidationError as error:
        raise InputError([_rename(e) for e in field_errors(error)]) from None
    derived_hold = derived_talk = None
    if item.answer is not None:
        if item.answer < item.start or (item.end is not None and item.end < item.answer):
            raise InputError.one("answer", "order", "must satisfy start <= answer <= end")
        derived_hold = item.answer - item.start
        if item.end is not None:
            derived_talk = item.end - item.answer
    elif item.end is not None:
        if item.end < item.start:
            raise InputError.one("end", "order", "must not be before start")
        derived_hold, derived_talk = item.end - item.start, 0
    talk = item.talk_duration if item.talk_duration is not None else derived_talk
    answered = item.answered if item.answered is not None else (item.answer is not None or bool(talk))
    ids = {k: v for k, v in (("ClientId", item.ClientId), ("UserId", item.UserId), ("Yclid", item.Yclid)) if v}
    columns = {name: getattr(item, name) for name in _PASS_THROUGH if getattr(item, name) is not None}
    return InboundCall(
        provider="generic",
        call_id=item.call_id,
        started_at=item.start,
        answered=answered,
        tracking_number=item.to,
        caller=item.from_,
        direction=item.direction,
        talk=talk,
        hold=item.hold_duration if item.hold_duration is not None else derived_hold,
        ids=ids,
        columns=columns,
    )


def _rename(error: FieldError) -> FieldError:
    return FieldError("from", error.rule, error.message) if error.field == "from_" else error


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InputError.one("body", "json", f"must be one JSON object ({error.msg})", status=400) from None
