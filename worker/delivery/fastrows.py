"""The fused rules of issue 26: a call, conversion or chat given as a plain JSON object, checked by hand
against every rule of its pydantic model and clock check, its row's CSV cells written straight into
their stored order (:mod:`worker.delivery.csvfile`).

Each check answers a :class:`Prepared` row or None: None hands the event to the model
(:mod:`worker.delivery.rows`), which gives the same rows and every error message, so these checks
never reject. They take only what is plainly valid: the JSON types the model reads as they are, no
value it would strip, convert or refuse, a DateTime within the clock rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from worker.delivery.csvfile import first_caller_bit, stored_order
from worker.model.calls import TimePolicy
from worker.model.chats import PLATFORMS
from worker.model.conversions import _TARGET_RE
from worker.model.currencies import ISO_4217
from worker.model.fields import (
    _DIGITS_RE,
    _SOURCE_ID_RE,
    _SOURCE_RE,
    _URL_RE,
    MAX_TEXT,
    MAX_URL,
    has_control,
)
from worker.model.kinds import CALLS, CHATS, CONVERSIONS, IdType, UploadKind
from worker.model.phones import PhoneRegions, normalize_phone

# The mask bit xadd_many.lua sets when it appends FirstTimeCaller to a call's stored row (csvfile.py).
FIRST_CALLER_BIT = first_caller_bit(CALLS, IdType.CLIENT_ID)


@dataclass(slots=True)
class Prepared:
    """One accepted event as the producer stores it."""

    index: int
    source_id: str
    counter_id: int
    bucket: str  # Bucket.encode()
    dedup_source: str
    mask: int
    cells: str  # the row's CSV cells without FirstTimeCaller (always the last stored column)
    first_caller: str | None = None  # "1"/"0" as the event says
    call_ref: tuple[str, str, str, str] | None = None  # provider, call id, identifier column, identifier

    def row(self, decided_by_history: bool) -> str:
        """The stored row; FirstTimeCaller is left to ``xadd_many.lua`` when the caller history decides."""
        if self.first_caller is None or decided_by_history:
            return f"{self.mask:x},{self.cells}"
        return f"{self.mask | FIRST_CALLER_BIT:x},{self.cells},{self.first_caller}"


_MAX_COUNTER = 2**63 - 1
_MAX_SECONDS = 86_400 * 7
_LAST_TIME = 2**34  # Unix seconds beyond which the fast path leaves DateTime to the model
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(moment: datetime) -> int:
    """``moment`` in whole microseconds since the epoch: compared with a DateTime (whole seconds) exactly."""
    return (moment - _EPOCH) // _MICROSECOND


# What a call object may hold: its source fields, the identifiers and the calls file's columns.
_CALL_KEYS = frozenset({"counter_id", "call_id", "provider", "ClientId", "UserId", "Yclid", *CALLS.columns})
_ORDER = stored_order(CALLS, IdType.CLIENT_ID)  # the identifier column first; the same bits for every id type
_BIT = {column: position for position, column in enumerate(_ORDER)}
_STATIC_BIT, _MISSED_BIT, _DATETIME_BIT = _BIT["StaticCall"], _BIT["CallMissed"], _BIT["DateTime"]
_PRICE_BIT, _CURRENCY_BIT, _PHONE_BIT = _BIT["Price"], _BIT["Currency"], _BIT["PhoneNumber"]
_TEXTS = tuple(
    (column, limit, url, _BIT[column])
    for column, limit, url in (("Tag", MAX_TEXT, False), ("URL", MAX_URL, True), ("CallTrackerURL", MAX_URL, True))
)
_SECONDS = (("TalkDuration", _BIT["TalkDuration"]), ("HoldDuration", _BIT["HoldDuration"]))
_ID_TYPES = ((IdType.CLIENT_ID, "ClientId"), (IdType.USER_ID, "UserId"), (IdType.YCLID, "Yclid"))
_TEXT_IDS = frozenset({IdType.USER_ID, IdType.PURCHASE_ID})
_CONVERSION_KEYS = frozenset(
    {"counter_id", "conversion_id", "source", "ClientId", "UserId", "Yclid", "PurchaseId", *CONVERSIONS.columns}
)
_CONVERSION_ID_TYPES = (*_ID_TYPES, (IdType.PURCHASE_ID, "PurchaseId"))
_CHAT_ALIASES = (("ClientID", "ClientId"), ("UserID", "UserId"), ("Yclid", "YCLID"), ("PurchaseID", "PurchaseId"))
_CHAT_KEYS = frozenset({"counter_id", "chat_id", "source", *CHATS.columns, *(b for _, b in _CHAT_ALIASES)})
# (column, the names it may be given under, digits only); the rest are one-line texts.
_CHAT_TEXTS = (
    ("ClientID", ("ClientID", "ClientId"), True),
    ("UserID", ("UserID", "UserId"), False),
    ("Yclid", ("Yclid", "YCLID"), True),
    ("PurchaseID", ("PurchaseID", "PurchaseId"), False),
    ("ChatUsername", ("ChatUsername",), False),
    ("ChatUserID", ("ChatUserID",), False),
    ("Tag", ("Tag",), False),
)
_CHAT_BIT = {column: position for position, column in enumerate(stored_order(CHATS, IdType.ANY))}
_CONVERSION_BIT = {column: position for position, column in enumerate(stored_order(CONVERSIONS, IdType.CLIENT_ID))}


_UNSURE = "?"


def _flag(value: object) -> str | None:
    """ "1"/"0", None for absent, ``_UNSURE`` when the model must decide."""
    if value is None:
        return None
    if type(value) is bool or (type(value) is int and value in (0, 1)):
        return "1" if value else "0"
    return _UNSURE


def _plain(value: object, limit: int) -> str | None:
    """``value`` when it is a string the model would keep as it is: non-empty, unstripped, no controls."""
    if type(value) is not str or not value or len(value) > limit:
        return None
    if value[0].isspace() or value[-1].isspace() or has_control(value):
        return None
    return value


def _cell(value: str) -> str:
    if "," in value or '"' in value or "\n" in value or "\r" in value:
        return '"' + value.replace('"', '""') + '"'
    return value


def _price(value: object) -> str | None:
    """The Price cell as ``format(Decimal, "f")``; None when the model must decide."""
    if type(value) is int:
        text = str(value)
    elif type(value) is str and value.isascii():
        text = value
    else:
        return None
    if not text or not text.replace(".", "", 1).isdigit() or text[0] == "." or text[-1] == ".":
        return None
    number = Decimal(text)
    if len(number.as_tuple().digits) > 18:
        return None
    return format(number, "f")


def _origin(raw: dict[str, Any], id_key: str, source_key: str) -> tuple[int, str, str, int] | None:
    """(counter, source id, source, Unix seconds) when all are plainly valid."""
    counter = raw.get("counter_id")
    source_id = raw.get(id_key)
    source = raw.get(source_key, "api")
    when = raw.get("DateTime")
    if (
        type(counter) is not int
        or not 0 < counter <= _MAX_COUNTER
        or type(source_id) is not str
        or not _SOURCE_ID_RE.fullmatch(source_id)
        or type(source) is not str
        or not _SOURCE_RE.fullmatch(source)
        or type(when) is not int
        or not 0 <= when < _LAST_TIME
    ):
        return None
    return counter, source_id, source, when


def _head(
    raw: dict[str, Any], id_key: str, source_key: str, id_types: tuple[tuple[IdType, str], ...]
) -> tuple[int, str, str, int, IdType, str] | None:
    """(counter, source id, source, Unix seconds, identifier type, identifier) when all are plainly valid."""
    origin = _origin(raw, id_key, source_key)
    if origin is None:
        return None
    id_type = None
    identifier = ""
    for candidate, column in id_types:
        value = raw.get(column)
        if value is None:
            continue
        if candidate in _TEXT_IDS:
            if _plain(value, 256) is None:
                return None
        elif type(value) is not str or not _DIGITS_RE.fullmatch(value):
            return None
        if id_type is None:
            id_type, identifier = candidate, value
    if id_type is None:
        return None
    return (*origin, id_type, identifier)


def _value(raw: dict[str, Any], cells: list[tuple[int, str]], price_bit: int, currency_bit: int) -> bool:
    """Add the Price and Currency cells; False when the model must decide."""
    price = raw.get("Price")
    if price is not None:
        cell = _price(price)
        if cell is None:
            return False
        cells.append((price_bit, cell))
    currency = raw.get("Currency")
    if currency is not None:
        if type(currency) is not str or currency.upper() not in ISO_4217:
            return False
        cells.append((currency_bit, currency.upper()))
    return True


def _line(cells: list[tuple[int, str]]) -> tuple[int, str]:
    """The mask and the CSV cells of (bit, cell) pairs."""
    cells.sort()
    mask = 0
    for bit, _ in cells:
        mask |= 1 << bit
    return mask, ",".join([cell for _, cell in cells])


class FastCheck:
    """The rules of ``CallEvent``, ``ConversionEvent`` and ``ChatEvent`` and their clock checks for one
    chunk, on JSON objects of the usual shape."""

    def __init__(self, now: datetime, policy: TimePolicy, regions: PhoneRegions) -> None:
        self._now = now
        self._future = now + policy.clock_skew
        self._oldest = now - policy.join_window
        self._late_static = policy.late_static
        self._now_us, self._future_us, self._oldest_us = _micros(now), _micros(self._future), _micros(self._oldest)
        self._regions = regions
        self._buckets: dict[tuple[int, UploadKind, IdType], str] = {}
        self._regions_of: dict[int, str | None] = {}  # a counter's numbering plan, read once per chunk

    def _bucket(self, counter: int, kind: UploadKind, id_type: IdType) -> str:
        key = (counter, kind, id_type)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = f"{counter}:{kind.value}:{id_type.value}"
        return bucket

    def conversion(self, index: int, raw: dict[str, Any]) -> Prepared | None:
        """The stored row of a valid conversion, or None: the model decides (and explains a rejection)."""
        if not _CONVERSION_KEYS.issuperset(raw):
            return None
        head = _head(raw, "conversion_id", "source", _CONVERSION_ID_TYPES)
        target = raw.get("Target")
        if head is None or type(target) is not str or not _TARGET_RE.fullmatch(target):
            return None
        counter, conversion_id, source, when, id_type, identifier = head
        stamp = when * 1_000_000
        if stamp >= self._now_us or stamp < self._oldest_us:
            return None
        cells = [(0, _cell(identifier)), (_CONVERSION_BIT["Target"], target), (_CONVERSION_BIT["DateTime"], str(when))]
        if not _value(raw, cells, _CONVERSION_BIT["Price"], _CONVERSION_BIT["Currency"]):
            return None
        mask, line = _line(cells)
        bucket = self._bucket(counter, UploadKind.CONVERSIONS, id_type)
        dedup = f"conversion\x1f{counter}\x1f{source}\x1f{conversion_id}"
        return Prepared(index, conversion_id, counter, bucket, dedup, mask, line)

    def chat(self, index: int, raw: dict[str, Any]) -> Prepared | None:
        """The stored row of a valid chat, or None: the model decides (and explains a rejection)."""
        if not _CHAT_KEYS.issuperset(raw) or any(a in raw and b in raw for a, b in _CHAT_ALIASES):
            return None
        origin = _origin(raw, "chat_id", "source")
        platform = raw.get("ChatPlatform")
        if origin is None or type(platform) is not str or platform.lower() not in PLATFORMS:
            return None
        counter, chat_id, source, when = origin
        stamp = when * 1_000_000
        if stamp > self._future_us or stamp < self._oldest_us:
            return None
        cells = [(_CHAT_BIT["DateTime"], str(when)), (_CHAT_BIT["ChatPlatform"], platform.lower())]
        for column, names, digits in _CHAT_TEXTS:
            value = next((raw[name] for name in names if name in raw), None)
            if value is None:
                continue
            if digits:
                if type(value) is not str or not _DIGITS_RE.fullmatch(value):
                    return None
            elif _plain(value, MAX_TEXT if column == "Tag" else 256) is None:
                return None
            cells.append((_CHAT_BIT[column], _cell(value)))
        if not self._phone(raw, counter, cells, _CHAT_BIT["PhoneNumber"]):
            return None
        if raw.get("PhoneNumber") is None and raw.get("ChatUsername") is None and raw.get("ChatUserID") is None:
            return None  # the partner rule
        answered = _flag(raw.get("Answered"))
        if answered == _UNSURE:
            return None
        if answered is not None:
            cells.append((_CHAT_BIT["Answered"], answered))
        mask, line = _line(cells)
        bucket = self._bucket(counter, UploadKind.CHATS, IdType.ANY)
        return Prepared(index, chat_id, counter, bucket, f"chat\x1f{counter}\x1f{source}\x1f{chat_id}", mask, line)

    def _phone(self, raw: dict[str, Any], counter: int, cells: list[tuple[int, str]], bit: int) -> bool:
        """Add the PhoneNumber cell (E.164 in the counter's plan); False when the model must decide."""
        value = raw.get("PhoneNumber")
        if value is None:
            return True
        text = _plain(value, 250)
        if text is None:
            return False
        try:
            region = self._regions_of[counter]
        except KeyError:
            region = self._regions_of[counter] = self._regions.of(counter)
        number = normalize_phone(text, region)
        if number is None:
            return False
        cells.append((bit, number))
        return True

    def call(self, index: int, raw: dict[str, Any]) -> Prepared | None:
        """The stored row of a valid call, or None: the model decides (and explains a rejection)."""
        if not _CALL_KEYS.issuperset(raw):
            return None
        head = _head(raw, "call_id", "provider", _ID_TYPES)
        if head is None:
            return None
        counter, call_id, provider, when, id_type, identifier = head
        cells: list[tuple[int, str]] = [(0, _cell(identifier)), (_DATETIME_BIT, str(when))]
        static = _flag(raw.get("StaticCall"))
        missed = _flag(raw.get("CallMissed"))
        if _UNSURE in (static, missed):
            return None
        if static is not None:
            cells.append((_STATIC_BIT, static))
        if missed is not None:
            cells.append((_MISSED_BIT, missed))
        first = _flag(raw.get("FirstTimeCaller"))
        if first == _UNSURE:
            return None
        stamp = when * 1_000_000
        if stamp > self._future_us or (stamp < self._oldest_us and not (self._late_static and static == "1")):
            return None
        if not _value(raw, cells, _PRICE_BIT, _CURRENCY_BIT):
            return None
        if not self._phone(raw, counter, cells, _PHONE_BIT):
            return None
        for column, bit in _SECONDS:
            seconds = raw.get(column)
            if seconds is not None:
                if type(seconds) is not int or not 0 <= seconds <= _MAX_SECONDS:
                    return None
                cells.append((bit, str(seconds)))
        for column, limit, url, bit in _TEXTS:
            value = raw.get(column)
            if value is not None:
                text = _plain(value, limit)
                if text is None or (url and not _URL_RE.fullmatch(text)):
                    return None
                cells.append((bit, _cell(text)))
        mask, line = _line(cells)
        bucket = self._bucket(counter, UploadKind.CALLS, id_type)
        return Prepared(
            index,
            call_id,
            counter,
            bucket,
            f"{counter}\x1f{provider}\x1f{call_id}",
            mask,
            line,
            first,
            (provider, call_id, id_type.column, identifier),
        )
