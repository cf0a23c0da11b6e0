"""A batch's rows as Metrica's CSV: each row is stored as its CSV line, so a file is joined, not built.

A stored row is ``<mask>,<cells>``: ``mask`` (hex) says which columns of the kind's stored order
(:func:`stored_order`: the identifier column, the kind's columns, ``FirstTimeCaller`` last so
``xadd_many.lua`` can append it) the row carries, ``cells`` are their values as CSV cells. The file's
header is the union of the rows' columns; rows that carry them all are joined as they are, the others
(another set of optional columns, rare in one batch) are read and written again with empty cells.
Rows stored as JSON objects (before issue 18) are read too, so batches sealed before an upgrade still
go out.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence

import orjson

from worker.model.kinds import IdType, KindSpec, UploadKind

_LAST = "FirstTimeCaller"  # appended by xadd_many.lua when the caller history decides it


_ORDERS: dict[tuple[UploadKind, IdType], tuple[str, ...]] = {}


def stored_order(spec: KindSpec, id_type: IdType) -> tuple[str, ...]:
    """The columns a stored row's mask numbers, bit 0 first."""
    key = (spec.kind, id_type)  # cheap to hash, unlike the spec itself (every row of a submit asks)
    order = _ORDERS.get(key)
    if order is None:
        columns = [c for c in spec.columns if c != _LAST]
        if _LAST in spec.columns:
            columns.append(_LAST)
        order = _ORDERS[key] = tuple(columns) if id_type is IdType.ANY else (id_type.column, *columns)
    return order


def first_caller_bit(spec: KindSpec, id_type: IdType) -> int:
    """The mask bit of ``FirstTimeCaller`` (0 when the kind has no such column)."""
    order = stored_order(spec, id_type)
    return 1 << order.index(_LAST) if _LAST in order else 0


def encode_row(spec: KindSpec, id_type: IdType, cells: Mapping[str, str]) -> str:
    """The stored form of one row (``<mask>,<cells>``); columns the kind does not know are left out."""
    mask = 0
    bit = 1
    out: list[str] = []
    for column in stored_order(spec, id_type):
        value = cells.get(column)
        if value is not None:
            mask |= bit
            if "," in value or '"' in value or "\n" in value or "\r" in value:
                value = '"' + value.replace('"', '""') + '"'
            out.append(value)
        bit <<= 1
    return f"{mask:x}," + ",".join(out)


def _text(row: str | bytes) -> str:
    return row.decode("utf-8") if isinstance(row, bytes) else row


def row_cells(spec: KindSpec, id_type: IdType, row: str | bytes) -> dict[str, str]:
    """One stored row as column -> value (either stored form)."""
    text = _text(row)
    if text.startswith("{"):
        return {k: str(v) for k, v in orjson.loads(text).items()}
    head, _, line = text.partition(",")
    mask = int(head, 16)
    columns = [c for bit, c in enumerate(stored_order(spec, id_type)) if mask >> bit & 1]
    values = next(csv.reader([line]), [])
    values += [""] * (len(columns) - len(values))  # a row of one empty cell reads as no cell
    return dict(zip(columns, values, strict=False))


def _withheld_bits(spec: KindSpec, id_type: IdType) -> int:
    return sum(1 << bit for bit, c in enumerate(stored_order(spec, id_type)) if c in spec.withheld)


def build_csv(spec: KindSpec, id_type: IdType, rows: Sequence[str | bytes]) -> bytes:
    """A UTF-8 CSV: header, then one line per row; columns are those that some row carries, less the
    kind's ``withheld`` ones (stored, never sent)."""
    order = stored_order(spec, id_type)
    texts = [_text(row) for row in rows]
    masks: list[int] = []
    for text in texts:
        if text.startswith("{"):
            masks.append(-1)
        else:
            masks.append(int(text[: text.index(",")], 16))
    if masks and -1 not in masks and len(set(masks)) == 1 and not masks[0] & _withheld_bits(spec, id_type):
        header = [c for bit, c in enumerate(order) if masks[0] >> bit & 1]
        lines: Iterable[str] = (text[text.index(",") + 1 :] for text in texts)
        return "\n".join([",".join(header), *lines, ""]).encode("utf-8")
    parsed = [row_cells(spec, id_type, text) for text in texts]
    present: set[str] = set()
    for cells in parsed:
        present.update(cells)
    header = [c for c in order if c in present and c not in spec.withheld]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([cells.get(column, "") for column in header] for cells in parsed)
    return out.getvalue().encode("utf-8")
