"""CSV file validation as Metrica describes it for calls, offline-conversion and chat uploads.

Whole-file problems raise :class:`~emulator.errors.InvalidUploading` (HTTP 400) with a message naming
the line and column. Row-level problems only drop the row: it counts in ``source_quantity`` but not
in ``line_quantity``. Accepted rows are kept as one compact CSV text (see :class:`ParsedFile`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from emulator.errors import InvalidParameter, InvalidUploading

if TYPE_CHECKING:
    from _csv import Reader

CALLS = "calls"
CONVERSIONS = "conversions"
CHATS = "chats"
KINDS = (CALLS, CONVERSIONS, CHATS)

ID_TYPES = {
    "ClientId": "CLIENT_ID", "UserId": "USER_ID", "Yclid": "YCLID", "PurchaseId": "PURCHASE_ID",
    # The chats pages spell the identifiers with a capital D.
    "ClientID": "CLIENT_ID", "UserID": "USER_ID", "PurchaseID": "PURCHASE_ID",
}  # fmt: skip
CALL_COLUMNS = (
    "ClientId", "UserId", "Yclid", "DateTime", "StaticCall", "Price", "Currency", "PhoneNumber",
    "TalkDuration", "HoldDuration", "CallMissed", "Tag", "FirstTimeCaller", "URL", "CallTrackerURL",
)  # fmt: skip
CONVERSION_COLUMNS = ("ClientId", "UserId", "Yclid", "PurchaseId", "Target", "DateTime", "Price", "Currency")
# Chats (type=CHATS): DateTime, ChatPlatform and at least one chat-partner id are documented; the
# Metrica identifiers are optional (a row without one is stored unattributed). The names of the optional
# "answered" and tag columns are not in the pages we could read: Answered and Tag are our choice, taken
# only outside strict mode (UNCONFIRMED_COLUMNS).
CHAT_PARTNER_COLUMNS = ("ChatUsername", "ChatUserID", "PhoneNumber")
CHAT_COLUMNS = (
    "DateTime", "ChatPlatform", *CHAT_PARTNER_COLUMNS, "ClientID", "UserID", "Yclid", "PurchaseID", "Answered", "Tag",
)  # fmt: skip
CHAT_PLATFORMS = frozenset({"whatsapp", "telegram", "viber"})
COLUMNS = {CALLS: frozenset(CALL_COLUMNS), CONVERSIONS: frozenset(CONVERSION_COLUMNS), CHATS: frozenset(CHAT_COLUMNS)}
UNCONFIRMED_COLUMNS = {CHATS: frozenset({"Answered", "Tag"})}
ORDERED_COLUMNS = {CALLS: CALL_COLUMNS, CONVERSIONS: CONVERSION_COLUMNS, CHATS: CHAT_COLUMNS}
ID_COLUMNS = {
    CALLS: ("ClientId", "UserId", "Yclid"),
    CONVERSIONS: ("ClientId", "UserId", "Yclid", "PurchaseId"),
    CHATS: ("ClientID", "UserID", "Yclid", "PurchaseID"),
}
REQUIRED_COLUMNS = {CALLS: ("DateTime",), CONVERSIONS: ("DateTime", "Target"), CHATS: ("DateTime", "ChatPlatform")}
# The legacy client_id_type parameter exists for calls and conversions only.
CLIENT_ID_TYPES = {kind: {ID_TYPES[c] for c in ID_COLUMNS[kind]} for kind in (CALLS, CONVERSIONS)}
# Kinds whose DateTime must not be in the future, and whose comment is limited to letters and digits.
PAST_ONLY = frozenset({CONVERSIONS, CHATS})
MAX_REJECTIONS_KEPT = 100

Check = Callable[[str], bool]


def _uint(value: str) -> bool:
    return value.isdigit() and value.isascii()


_FLAG = frozenset({"0", "1"}).__contains__
_PRICE = re.compile(r"[0-9]+(?:\.[0-9]+)?").fullmatch
_CURRENCY = re.compile(r"[A-Za-z]{3}").fullmatch
_PHONE = re.compile(r"\+?[0-9]{1,20}").fullmatch
_CONVERSION_COMMENT = re.compile("[0-9A-Za-z\u0410-\u044f\u0401\u0451]*").fullmatch


def _any(value: str) -> bool:
    return True


CHECKS: dict[str, tuple[Check, str]] = {
    "ClientId": (_uint, "must be a positive integer"),
    "ClientID": (_uint, "must be a positive integer"),
    "Yclid": (_uint, "must be a positive integer"),
    "UserId": (_any, ""),
    "UserID": (_any, ""),
    "PurchaseId": (_any, ""),
    "PurchaseID": (_any, ""),
    "ChatPlatform": (CHAT_PLATFORMS.__contains__, "must be one of whatsapp, telegram, viber (lowercase)"),
    "Answered": (_FLAG, "must be 0 or 1"),
    "Target": (_any, ""),
    "DateTime": (_uint, "must be Unix seconds"),
    "StaticCall": (_FLAG, "must be 0 or 1"),
    "CallMissed": (_FLAG, "must be 0 or 1"),
    "FirstTimeCaller": (_FLAG, "must be 0 or 1"),
    "Price": (lambda v: _PRICE(v) is not None, "must be a non-negative number with '.' as decimal point"),
    "Currency": (lambda v: _CURRENCY(v) is not None, "must be a three-letter ISO 4217 code"),
    "PhoneNumber": (lambda v: _PHONE(v) is not None, "must be digits with an optional leading '+'"),
    "TalkDuration": (_uint, "must be a whole number of seconds"),
    "HoldDuration": (_uint, "must be a whole number of seconds"),
}


@dataclass
class Rejection:
    """A row dropped by row-level validation (first ones only are kept)."""

    line: int
    column: str
    reason: str


@dataclass
class ParsedFile:
    """A validated file: header, counts and the accepted rows as CSV text without header."""

    header: tuple[str, ...]
    id_column: str  # "" for a chats file without any Metrica identifier column
    source_quantity: int
    line_quantity: int
    accepted_csv: str
    static_calls: int = 0
    matched: bool = True
    rejections: list[Rejection] = field(default_factory=list)
    joined_quantity: int | None = None  # rows joined to a visit (None: join rules were off)
    unjoined: dict[str, int] = field(default_factory=dict)  # reason -> rows not joined

    @property
    def client_id_type(self) -> str | None:
        return ID_TYPES[self.id_column] if self.id_column else None

    def iter_rows(self) -> Reader:
        return csv.reader(io.StringIO(self.accepted_csv))


RowJoin = Callable[[list[str]], tuple[bool, bool, str]]
"""For one valid row: (joined to a visit, kept in line_quantity, reason when not joined)."""


class JoinRules(Protocol):
    """Decides row by row whether data joins a visit (see emulator.joins)."""

    def bind(self, kind: str, header: tuple[str, ...], id_column: str) -> RowJoin: ...


def check_comment(kind: str, comment: str | None) -> None:
    """At most 255 characters; for conversions and chats only digits, Latin and Cyrillic letters."""
    if comment is None:
        return
    if len(comment) > 255:
        raise InvalidParameter(
            f"Parameter comment is too long: {len(comment)} characters, at most 255 are allowed", "comment"
        )
    if kind in PAST_ONLY and _CONVERSION_COMMENT(comment) is None:
        raise InvalidParameter("Parameter comment may contain only digits, Latin and Cyrillic letters", "comment")


def check_client_id_type(kind: str, value: str | None) -> None:
    """The legacy ``client_id_type`` parameter must be one of the documented values (ignored for chats)."""
    if value is not None and kind in CLIENT_ID_TYPES and value not in CLIENT_ID_TYPES[kind]:
        allowed = ", ".join(sorted(CLIENT_ID_TYPES[kind]))
        raise InvalidParameter(
            f"Parameter client_id_type has invalid value '{value}'; allowed: {allowed}", "client_id_type"
        )


def _decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InvalidUploading(
            f"Line {line}, column {column}: the file is not valid UTF-8 (byte {exc.start})", "file"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def _header(kind: str, reader: Reader, client_id_type: str | None, strict: bool) -> tuple[tuple[str, ...], str]:
    try:
        first = next(reader, None)
    except csv.Error as exc:
        raise InvalidUploading(f"Line 1, column 1: the header line cannot be parsed as CSV: {exc}", "file") from None
    if not first or not any(cell.strip() for cell in first):
        raise InvalidUploading("Line 1, column 1: the file has no header line naming the columns", "file")
    header = tuple(cell.strip() for cell in first)
    unconfirmed = UNCONFIRMED_COLUMNS.get(kind, frozenset()) if strict else frozenset()
    allowed = COLUMNS[kind] - unconfirmed
    seen: dict[str, int] = {}
    ids: list[tuple[int, str]] = []
    for number, name in enumerate(header, start=1):
        if name not in allowed:
            raise InvalidUploading(
                f"Line 1, column {number}: unknown column '{name}'; allowed columns: "
                + ", ".join(c for c in ORDERED_COLUMNS[kind] if c not in unconfirmed),
                "file",
            )
        if name in seen:
            raise InvalidUploading(f"Line 1, column {number}: column '{name}' repeats column {seen[name]}", "file")
        seen[name] = number
        if name in ID_COLUMNS[kind]:
            ids.append((number, name))
    if kind == CHATS:
        return _chat_header(header, seen, ids)
    if not ids:
        raise InvalidUploading(
            f"Line 1, column {len(header) + 1}: the header has no identifier column; exactly one of "
            + ", ".join(ID_COLUMNS[kind])
            + " is required",
            "file",
        )
    if len(ids) > 1:
        (_, first_id), (number, second_id) = ids[0], ids[1]
        raise InvalidUploading(
            f"Line 1, column {number}: second identifier column '{second_id}' "
            f"(the file already has '{first_id}'); use one identifier type per file",
            "file",
        )
    for name in REQUIRED_COLUMNS[kind]:
        if name not in seen:
            raise InvalidUploading(f"Line 1, column {len(header) + 1}: required column '{name}' is missing", "file")
    id_number, id_column = ids[0]
    if client_id_type is not None and ID_TYPES[id_column] != client_id_type:
        raise InvalidUploading(
            f"Line 1, column {id_number}: identifier column '{id_column}' does not match "
            f"client_id_type={client_id_type}",
            "client_id_type",
        )
    return header, id_column


def _chat_header(
    header: tuple[str, ...], seen: dict[str, int], ids: list[tuple[int, str]]
) -> tuple[tuple[str, ...], str]:
    """Chats: DateTime, ChatPlatform and a chat-partner column required; Metrica ids optional, several allowed."""
    for name in REQUIRED_COLUMNS[CHATS]:
        if name not in seen:
            raise InvalidUploading(f"Line 1, column {len(header) + 1}: required column '{name}' is missing", "file")
    if not any(name in seen for name in CHAT_PARTNER_COLUMNS):
        raise InvalidUploading(
            f"Line 1, column {len(header) + 1}: the header has no chat-partner column; at least one of "
            + ", ".join(CHAT_PARTNER_COLUMNS)
            + " is required",
            "file",
        )
    return header, ids[0][1] if ids else ""


def parse_file(
    kind: str,
    data: bytes,
    *,
    now: float,
    client_id_type: str | None = None,
    known_visitors: Collection[str] | None = None,
    joins: JoinRules | None = None,
    strict: bool = False,
) -> ParsedFile:
    """Validate one uploaded file; raise InvalidUploading for whole-file problems.

    Without ``joins`` (the default) a file is matched when ``known_visitors`` is None or holds one of its
    identifiers. With ``joins`` every valid row is also checked for a join (see emulator.joins). ``strict``
    refuses the columns no reference page names (``UNCONFIRMED_COLUMNS``)."""
    text = _decode(data)
    if not text.strip():
        raise InvalidUploading("Line 1, column 1: the file is empty; its first line must name the columns", "file")
    reader = csv.reader(io.StringIO(text))
    header, id_column = _header(kind, reader, client_id_type, strict)
    width = len(header)
    id_indexes = [i for i, name in enumerate(header) if name in ID_COLUMNS[kind]]
    id_index = header.index(id_column) if id_column and kind != CHATS else -1
    required: list[tuple[int, str, Check, str]] = []
    optional: list[tuple[int, str, Check, str]] = []
    for index, name in enumerate(header):
        check, reason = CHECKS.get(name, (_any, ""))
        target = required if (index == id_index or name in REQUIRED_COLUMNS[kind]) else optional
        if check is not _any or target is required:
            target.append((index, name, check, reason))
    dt_index = header.index("DateTime")
    max_dt = int(now) if kind in PAST_ONLY else None
    static_index = header.index("StaticCall") if "StaticCall" in header else -1
    partner_indexes = [i for i, name in enumerate(header) if name in CHAT_PARTNER_COLUMNS] if kind == CHATS else []
    join_row = joins.bind(kind, header, id_column) if joins is not None else None

    accepted: list[list[str]] = []
    rejections: list[Rejection] = []
    rejected = 0
    source = 0
    static = 0
    joined = 0
    unjoined: dict[str, int] = {}
    matched = known_visitors is None and join_row is None
    try:
        for row in reader:
            if not row:
                continue  # blank line
            source += 1
            problem: tuple[str, str] | None = None
            if len(row) != width:
                problem = ("", f"has {len(row)} fields, the header has {width}")
            else:
                for index, name, check, reason in required:
                    value = row[index]
                    if not value:
                        problem = (name, "is empty but required")
                        break
                    if not check(value):
                        problem = (name, reason)
                        break
                else:
                    for index, name, check, reason in optional:
                        value = row[index]
                        if value and not check(value):
                            problem = (name, reason)
                            break
                if problem is None and max_dt is not None and int(row[dt_index]) > max_dt:
                    problem = ("DateTime", "is in the future")
                if problem is None and partner_indexes and not any(row[i] for i in partner_indexes):
                    problem = (header[partner_indexes[0]], "no chat-partner id (ChatUsername, ChatUserID, PhoneNumber)")
            if problem is None and join_row is not None:
                is_joined, keep, why = join_row(row)
                if is_joined:
                    joined += 1
                    matched = True
                else:
                    unjoined[why] = unjoined.get(why, 0) + 1
                    if not keep:
                        problem = ("", f"not joined: {why}")
            if problem is not None:
                rejected += 1
                if len(rejections) < MAX_REJECTIONS_KEPT:
                    rejections.append(Rejection(reader.line_num, problem[0], problem[1]))
                continue
            accepted.append(row)
            if static_index >= 0 and row[static_index] == "1":
                static += 1
            if not matched and join_row is None and known_visitors is not None:
                matched = any(row[i] in known_visitors for i in id_indexes)
    except csv.Error as exc:
        message = f"Line {reader.line_num}, column 1: the line cannot be parsed as CSV: {exc}"
        raise InvalidUploading(message, "file") from None
    if source == 0:
        raise InvalidUploading("Line 2, column 1: the file has no data rows after the header", "file")
    if rejected == 0:
        newline = text.find("\n")
        body = "" if newline < 0 else text[newline + 1 :]
    else:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(accepted)
        body = buffer.getvalue()
    return ParsedFile(
        header=header,
        id_column=id_column,
        source_quantity=source,
        line_quantity=len(accepted),
        accepted_csv=body,
        static_calls=static,
        matched=matched,
        rejections=rejections,
        joined_quantity=joined if join_row is not None else None,
        unjoined=unjoined,
    )
