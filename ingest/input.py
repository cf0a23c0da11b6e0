"""Helpers the provider adapters share: the error that names a field, form and number parsing."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from worker.model.calls import FieldError


class InputError(ValueError):
    """The request body breaks a rule; ``errors`` name each field. Answered 400 or 422."""

    def __init__(self, errors: list[FieldError], *, status: int = 422) -> None:
        self.errors = errors
        self.status = status
        super().__init__("; ".join(str(e) for e in errors))

    @classmethod
    def one(cls, field: str, rule: str, message: str, *, status: int = 422) -> InputError:
        return cls([FieldError(field, rule, message)], status=status)


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """``application/x-www-form-urlencoded`` pairs, in order; 400 when it is not UTF-8 form data."""
    try:
        text = body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=1000)
    except (UnicodeDecodeError, ValueError):
        # parse_qsl raises ValueError on a malformed pair or too many fields
        raise InputError.one("body", "form", "must be UTF-8 form data (x-www-form-urlencoded)", status=400) from None


def required(form: Mapping[str, str], field: str) -> str:
    value = form.get(field, "").strip()
    if not value:
        raise InputError.one(field, "missing", "is required")
    return value


def seconds(form: Mapping[str, object], field: str, *, default: int | None = None) -> int | None:
    """A whole non-negative number of seconds (up to a week)."""
    value = form.get(field)
    if value is None or value == "":
        return default
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) > 7 * 86_400:
        raise InputError.one(field, "seconds", "must be a whole number of seconds from 0 to 604800")
    return int(text)


def unix_time(value: object, field: str) -> int:
    """Unix seconds given as a number or digits."""
    text = str(value).strip() if value is not None and not isinstance(value, bool) else ""
    if not text.isdigit() or len(text) > 12:
        raise InputError.one(field, "unix_time", "must be Unix seconds")
    return int(text)


def local_time(value: str, field: str, zone: ZoneInfo) -> int:
    """``YYYY-MM-DD HH:MM:SS`` in ``zone`` as Unix seconds."""
    try:
        parsed = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise InputError.one(field, "datetime", "must be a time as YYYY-MM-DD HH:MM:SS") from None
    return int(parsed.replace(tzinfo=zone).timestamp())


def rfc2822_time(value: str, field: str) -> int:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise InputError.one(
            field, "datetime", "must be an RFC 2822 time, as Sun, 25 Mar 2018 09:53:19 +0000"
        ) from None
    if parsed.tzinfo is None:
        raise InputError.one(field, "datetime", "must carry a time zone")
    return int(parsed.timestamp())
