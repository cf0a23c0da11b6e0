"""Output for people (aligned tables) and for scripts (``--json``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
import orjson


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def emit(data: Any, *, as_json: bool, headers: Sequence[str] = (), rows: Sequence[Sequence[object]] = ()) -> None:
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    elif headers:
        click.echo(table(headers, rows))
    else:
        click.echo(str(data))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")
