"""Output for people (aligned tables) and for scripts (``--json``).

Everything printed passes :func:`safe`: control characters (ESC, CR, NUL, C1), Unicode line and
paragraph separators and bidirectional overrides are printed as escapes (``\\x1b``, ``\\u2028``),
so data from a webhook, a CSV or Redis can never move the cursor, recolour or rewrite a terminal.
Times in tables are ISO 8601 in the machine's local zone (:func:`local_time`); ``--json`` keeps
the stored values (epoch milliseconds or seconds).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click
import orjson

_UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_JSON_RE = re.compile("[\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: object) -> str:
    """``value`` as text with every unsafe character escaped (newlines kept only where ``say`` puts them)."""
    return _UNSAFE_RE.sub(_escape, str(value))


def local_time(value: int | float | str | None, *, unit: float = 1000.0) -> str:
    """An epoch time (milliseconds; ``unit=1`` for seconds) as local ISO 8601 with its offset, or ``-``."""
    try:
        number = float(value or 0)
    except ValueError:
        return safe(value)
    if number <= 0:
        return "-"
    return datetime.fromtimestamp(number / unit).astimezone().isoformat(timespec="seconds")


def say(text: object = "") -> None:
    """Print one or more lines; each line's content is escaped with :func:`safe`."""
    click.echo("\n".join(safe(line) for line in str(text).split("\n")))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[safe(h) for h in headers], *[["" if c is None else safe(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def emit(data: Any, *, as_json: bool, headers: Sequence[str] = (), rows: Sequence[Sequence[object]] = ()) -> None:
    if as_json:
        # orjson escapes C0 controls in strings (its only raw ones are the indentation's newlines); the
        # rest (DEL, C1, U+2028, ...) become \\u escapes here: the same JSON, safe on a terminal.
        text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
        click.echo(_UNSAFE_JSON_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))
    elif headers:
        click.echo(table(headers, rows))
    else:
        say(data)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")
