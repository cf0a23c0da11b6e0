"""Pieces shared by the Metrica handlers: the admitted request, JSON answers and parameter parsing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from emulator.config import Account
from emulator.errors import ApiError, InvalidParameter
from emulator.state import EmulatorState


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def error_response(error: ApiError) -> Response:
    return json_response(error.body(), error.http_status)


def positive_int(value: str, name: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) <= 0:
        raise InvalidParameter(f"Parameter {name} must be a positive integer, got '{value}'", name)
    return int(value)


def optional_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(f"Parameter {name} must be an integer, got '{raw}'", name) from None
    if not low <= value <= high:
        raise InvalidParameter(f"Parameter {name} must be within {low}..{high}, got {value}", name)
    return value


@dataclass(frozen=True)
class Call:
    """One admitted API request; ``counter`` is 0 for requests not about one counter."""

    request: Request
    state: EmulatorState
    account: Account
    counter: int
    kind: str


Operation = Callable[[Call], Awaitable[Response]]
