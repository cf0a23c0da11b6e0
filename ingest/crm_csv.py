"""Import offline conversions from a CRM's CSV export, with a configurable column mapping.

A CRM exports deals or orders in its own columns; ``ColumnMap`` says which export column feeds
which conversion field (``conversion_id``, ``counter_id``, ``ClientId``, ``UserId``, ``Yclid``,
``PurchaseId``, ``Target``, ``DateTime``, ``Price``, ``Currency``), and which fields are constants
for the whole file (a ``Target`` goal, a ``counter_id``). Times without a zone are read in the
configured time zone. Rows are submitted in chunks through the producer; a row that breaks a rule is
reported by its line number and the field, and nothing of it is stored. Importing the same file
again stores nothing twice (conversions are deduplicated on their ``conversion_id``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from worker.delivery.producer import Producer
from worker.model.fields import FieldError
from worker.model.kinds import UploadKind

FIELDS = (
    "conversion_id",
    "counter_id",
    "ClientId",
    "UserId",
    "Yclid",
    "PurchaseId",
    "Target",
    "DateTime",
    "Price",
    "Currency",
)
CHUNK = 1_000


class MappingError(ValueError):
    """The column mapping names an unknown field, or a column the file does not have."""


@dataclass(frozen=True)
class ColumnMap:
    """Conversion field -> export column, plus constant values for whole-file fields."""

    columns: Mapping[str, str]
    constants: Mapping[str, str] = field(default_factory=dict)
    timezone: str = "UTC"
    source: str = "crm"

    def __post_init__(self) -> None:
        for name in (*self.columns, *self.constants):
            if name not in FIELDS:
                raise MappingError(f"{name!r} is not a conversion field; use one of {', '.join(FIELDS)}")
        if "conversion_id" not in self.columns:
            raise MappingError("conversion_id must come from a column: it is what makes a re-import safe")
        ZoneInfo(self.timezone)  # raises for an unknown zone

    @classmethod
    def parse(cls, pairs: list[str], constants: list[str], timezone: str = "UTC", source: str = "crm") -> ColumnMap:
        """From ``FIELD=column`` and ``FIELD=value`` strings (the CLI's --map and --set)."""

        def split(items: list[str], what: str) -> dict[str, str]:
            result = {}
            for item in items:
                name, sep, value = item.partition("=")
                if not sep or not name.strip() or not value.strip():
                    raise MappingError(f"{what} {item!r} must look like FIELD={what}")
                result[name.strip()] = value.strip()
            return result

        return cls(split(pairs, "column"), split(constants, "value"), timezone, source)

    def check_header(self, header: list[str]) -> None:
        missing = [column for column in self.columns.values() if column not in header]
        if missing:
            raise MappingError(f"the file has no column {', '.join(repr(m) for m in missing)}")

    def event(self, row: Mapping[str, str]) -> dict[str, Any]:
        event: dict[str, Any] = {"source": self.source, **self.constants}
        for name, column in self.columns.items():
            value = (row.get(column) or "").strip()
            if value != "":
                event[name] = value
        when = event.get("DateTime")
        if isinstance(when, str) and not when.isdigit():
            event["DateTime"] = _with_zone(when, self.timezone)
        return event


def _with_zone(text: str, zone: str) -> str:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text  # the model names the field and the rule
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(zone))
    return parsed.isoformat()


@dataclass
class ImportReport:
    """Totals of one import, and each rejected line with its errors."""

    accepted: int = 0
    rejected: list[tuple[int, tuple[FieldError, ...]]] = field(default_factory=list)


def read_rows(path: Path, delimiter: str = ",", encoding: str = "utf-8-sig") -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for every data row; the header is line 1."""
    with path.open(encoding=encoding, newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        for row in reader:
            yield reader.line_num, {k: v for k, v in row.items() if k is not None}


def header_of(path: Path, delimiter: str = ",", encoding: str = "utf-8-sig") -> list[str]:
    with path.open(encoding=encoding, newline="") as handle:
        first = handle.readline()
    return next(csv.reader(io.StringIO(first), delimiter=delimiter), [])


def import_file(
    producer: Producer, path: Path, mapping: ColumnMap, *, delimiter: str = ",", progress: Any = None
) -> ImportReport:
    """Submit every row of ``path`` as a conversion; returns what was accepted and rejected."""
    mapping.check_header(header_of(path, delimiter))
    report = ImportReport()
    chunk: list[tuple[int, dict[str, Any]]] = []

    def flush() -> None:
        result = producer.submit([event for _, event in chunk], kind=UploadKind.CONVERSIONS)
        report.accepted += len(result.accepted)
        report.rejected.extend((chunk[r.index][0], r.errors) for r in result.rejected)
        if progress is not None:
            progress(len(chunk))
        chunk.clear()

    for line, row in read_rows(path, delimiter):
        chunk.append((line, mapping.event(row)))
        if len(chunk) >= CHUNK:
            flush()
    if chunk:
        flush()
    return report
