"""The per-line report of a bulk NDJSON request, kept small while a body of up to 100,000 lines streams in.

Each line costs one small tuple: its number and the text of its outcome. Outcome texts of refused
lines are shared (a body of identical bad lines holds one text), bounded (at most ``MAX_ERRORS``
errors per line, each field and message cut at ``MAX_TEXT`` characters) and, past
``MAX_DISTINCT`` different refusals, replaced by one summary text: a hostile body cannot make the
report larger than the body itself by much.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from worker.model.fields import FieldError

MAX_ERRORS = 5
MAX_TEXT = 200
MAX_DISTINCT = 1000
_MORE = '{"status":"rejected","reason":"rejected (more than 1000 different refusals: details left out)"}'

Outcome = tuple[int, str, dict[str, Any]]  # line number, status, what the report says (without "line")


def rejected(number: int, reason: str, errors: Sequence[FieldError]) -> Outcome:
    shown = [
        {"field": e.field[:MAX_TEXT], "rule": e.rule[:MAX_TEXT], "message": e.message[:MAX_TEXT]}
        for e in errors[:MAX_ERRORS]
    ]
    return number, "rejected", {"status": "rejected", "reason": reason[: MAX_TEXT * 2], "errors": shown}


class BulkReport:
    """Outcomes of the lines handled so far, in line order per chunk; rendered once at the end."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str]] = []
        self.totals: Counter[str] = Counter()
        self._texts: dict[str, str] = {}

    def add(self, outcomes: Sequence[Outcome]) -> None:
        for number, status, body in sorted(outcomes, key=lambda item: item[0]):
            text = orjson.dumps(body).decode()
            if status == "rejected":
                known = self._texts.get(text)
                if known is None:
                    known = text if len(self._texts) < MAX_DISTINCT else _MORE
                    self._texts.setdefault(known, known)
                text = known
            self.items.append((number, text))
            self.totals[status] += 1

    @property
    def last_line(self) -> int:
        return self.items[-1][0] if self.items else 0

    def render(self, head: dict[str, Any]) -> bytes:
        parts = [orjson.dumps(head)[:-1].decode(), ',"lines":[']
        parts.append(",".join(f'{{"line":{number},{text[1:]}' for number, text in self.items))
        parts.append("]}")
        return "".join(parts).encode()
