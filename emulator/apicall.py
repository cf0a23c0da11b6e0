"""Pieces shared by the Metrica handlers: the admitted request, JSON answers (and their scripted shapes)
and parameter parsing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from emulator.config import Account
from emulator.errors import ApiError, InvalidParameter
from emulator.state import EmulatorState


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _objects(body: Any) -> list[dict[str, Any]]:
    """The upload objects of an answer: under ``uploading``, or the elements of ``uploadings``."""
    if isinstance(body.get("uploading"), dict):
        return [body["uploading"]]
    return [item for item in body.get("uploadings") or [] if isinstance(item, dict)]


def reshape(response: Response, shape: str) -> Response:
    """A scripted ``shape`` (emulator.faults.SHAPES) applied to a handled request's 2xx answer."""
    if shape == "not_json":
        return PlainTextResponse("OK", status_code=response.status_code)
    if shape == "unreadable":
        return json_response({"result": "ok"}, response.status_code)
    body = orjson.loads(bytes(response.body))
    objects = _objects(body)
    if shape == "untyped":
        for item in objects:
            item.pop("type", None)
        return json_response(body, response.status_code)
    if not objects:
        return response
    wrapped = {"uploading": objects[0]} if shape == "uploading" else {"uploadings": objects[:1]}
    return json_response(wrapped, response.status_code)


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
