"""Build the CSV file Metrica receives from a batch's stored rows."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import orjson

from worker.model.kinds import IdType, KindSpec


def build_csv(spec: KindSpec, id_type: IdType, rows: Sequence[str | bytes]) -> bytes:
    """A UTF-8 CSV: header, then one line per row; columns are those that some row carries."""
    parsed = [orjson.loads(row) for row in rows]
    present: set[str] = set()
    for row in parsed:
        present.update(row)
    header = spec.header(id_type, present)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([row.get(column, "") for column in header] for row in parsed)
    return out.getvalue().encode("utf-8")
