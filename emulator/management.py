"""Management API beyond uploads: the counters list, one counter, goals, and the extended-threshold
switches with their join-threshold dates (see docs/metrica-api.md). Today's counter object has no
``offline_options``: the options are switched with the threshold requests and seen only through the
join-threshold dates (and the admin API)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from emulator.apicall import Call, Operation, json_response, optional_int
from emulator.clock import format_iso
from emulator.counters import CALLS_OPTION, CONVERSIONS_OPTION, join_from
from emulator.errors import InvalidParameter

PER_PAGE_MAX = 10000
DEFAULT_PER_PAGE = 1000
OFFLINE_PREFIX = "/management/v1/counter/{counter_id}/offline_conversions"


def counter_object(call: Call, counter: int) -> dict[str, Any]:
    state = call.state
    info = state.counter_info.get(counter)
    owner = state.owner_of(counter) or call.account.login
    body: dict[str, Any] = {
        "id": counter,
        "status": "Active",
        "owner_login": owner,
        "code_status": "CS_OK",
        "name": info.name if info is not None and info.name is not None else f"Counter {counter}",
        "site": info.site if info is not None and info.site else f"site{counter}.example",
        "type": "simple",
        "permission": "own" if owner == call.account.login else "edit",
    }
    return body


async def _json_body(call: Call) -> dict[str, Any]:
    raw = await call.request.body()
    try:
        data = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise InvalidParameter("The request body is not valid JSON", "body") from None
    if not isinstance(data, dict):
        raise InvalidParameter("The request body must be a JSON object", "body")
    return data


async def counters_list(call: Call) -> Response:
    """``GET /management/v1/counters?per_page=&offset=&search_string=``; ``offset`` is 1-based."""
    per_page = optional_int(call.request, "per_page", DEFAULT_PER_PAGE, 1, PER_PAGE_MAX)
    offset = optional_int(call.request, "offset", 1, 1, 1 << 62)
    search = (call.request.query_params.get("search_string") or "").lower()
    objects = [counter_object(call, c) for c in call.state.reachable_counters(call.account)]
    if search:
        objects = [
            o for o in objects if search in str(o["id"]) or search in o["name"].lower() or search in o["site"].lower()
        ]
    return json_response({"rows": len(objects), "counters": objects[offset - 1 : offset - 1 + per_page]})


async def counter_get(call: Call) -> Response:
    return json_response({"counter": counter_object(call, call.counter)})


async def counter_put(call: Call) -> Response:
    """``PUT counter/{id}`` with ``{"counter": {...}}``: the emulator keeps none of its fields (the object
    has no ``offline_options``: a PUT never switches an option)."""
    data = await _json_body(call)
    if not isinstance(data.get("counter"), dict):
        raise InvalidParameter('The body must be {"counter": {...}}', "counter")
    return await counter_get(call)


async def goals_get(call: Call) -> Response:
    return json_response({"goals": [g.to_api() for g in call.state.counters.get(call.counter).goals]})


async def goals_post(call: Call) -> Response:
    """``POST counter/{id}/goals`` with ``{"goal": {"name", "type", "conditions": [{"type", "url"}]}}``."""
    data = await _json_body(call)
    goal = data.get("goal")
    if not isinstance(goal, dict):
        raise InvalidParameter('The body must be {"goal": {...}}', "goal")
    created = call.state.counters.add_goal(call.counter, goal)
    return json_response({"goal": created.to_api()})


def _switch(option: str, on: bool) -> Operation:
    async def operation(call: Call) -> Response:
        call.state.counters.set_option(call.counter, option, on, call.state.clock.now())
        return json_response({"success": True})

    return operation


def _threshold(option: str) -> Operation:
    async def operation(call: Call) -> Response:
        now = call.state.clock.now()
        enabled_at = call.state.counters.get(call.counter).enabled.get(option)
        return json_response({"date": format_iso(join_from(enabled_at, now))})

    return operation


TABLE: list[tuple[str, list[str], dict[str, Operation]]] = [
    ("/management/v1/counters", ["GET"], {"GET": counters_list}),
    ("/management/v1/counter/{counter_id}", ["GET", "PUT"], {"GET": counter_get, "PUT": counter_put}),
    ("/management/v1/counter/{counter_id}/goals", ["GET", "POST"], {"GET": goals_get, "POST": goals_post}),
    (
        f"{OFFLINE_PREFIX}/extended_threshold",
        ["POST", "DELETE"],
        {"POST": _switch(CONVERSIONS_OPTION, True), "DELETE": _switch(CONVERSIONS_OPTION, False)},
    ),
    (
        f"{OFFLINE_PREFIX}/calls_extended_threshold",
        ["POST", "DELETE"],
        {"POST": _switch(CALLS_OPTION, True), "DELETE": _switch(CALLS_OPTION, False)},
    ),
    (f"{OFFLINE_PREFIX}/visit_join_threshold", ["GET"], {"GET": _threshold(CONVERSIONS_OPTION)}),
    (f"{OFFLINE_PREFIX}/calls_visit_join_threshold", ["GET"], {"GET": _threshold(CALLS_OPTION)}),
]
