"""Admin API under ``/_emulator/``: uploads, reset, faults, clock, quotas, settings, tokens, logins, counters.

No authentication and no quotas: it is for tests and people running the demo.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator.clock import format_iso, parse_iso
from emulator.config import quotas_from_dict
from emulator.counters import OPTIONS
from emulator.errors import ApiError
from emulator.faults import rule_from_dict, script_from_dict
from emulator.oauth import token_answer
from emulator.state import EmulatorState
from emulator.validation import KINDS


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("the request body must be a JSON object")
    return data


def _filters(request: Request) -> tuple[int | None, str | None]:
    counter = request.query_params.get("counter")
    kind = request.query_params.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    return (int(counter) if counter else None), kind


Handler = Callable[[Request, EmulatorState], Awaitable[Any]]


def _admin(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return _json(await handler(request, _state(request)))
        except (ValueError, KeyError, TypeError) as exc:
            return _json({"error": str(exc)}, 400)
        except ApiError as exc:
            return _json({"error": exc.message}, 400)

    return endpoint


async def health(request: Request, state: EmulatorState) -> Any:
    return {"ok": True}


async def uploads(request: Request, state: EmulatorState) -> Any:
    counter, kind = _filters(request)
    with_rows = request.query_params.get("rows", "1").lower() not in ("0", "false", "no")
    now = state.clock.now()
    found = state.store.all(counter, kind)
    return {"uploads": [u.to_admin(now, state.step_seconds, with_rows) for u in found]}


async def rows(request: Request, state: EmulatorState) -> Any:
    """Accepted rows as dicts; ``format=csv`` answers per upload its columns and rows as CSV text instead
    (much smaller and faster for a million rows; EmulatorAdmin.rows uses it)."""
    counter, kind = _filters(request)
    if request.query_params.get("format") == "csv":
        return {
            "uploads": [
                {
                    "upload_id": str(u.id),
                    "comment": u.comment or "",
                    "counter": str(u.counter),
                    "kind": u.kind,
                    "columns": list(u.file.header),
                    "csv": u.file.accepted_csv,
                }
                for u in state.store.all(counter, kind)
            ]
        }
    result: list[dict[str, str]] = []
    for upload in state.store.all(counter, kind):
        extra = {
            "upload_id": str(upload.id),
            "comment": upload.comment or "",
            "counter": str(upload.counter),
            "kind": upload.kind,
        }
        for row in upload.rows():
            row.update(extra)
            result.append(row)
    return {"rows": result}


async def reset(request: Request, state: EmulatorState) -> Any:
    state.reset()
    return {"ok": True}


async def faults(request: Request, state: EmulatorState) -> Any:
    if request.method == "DELETE":
        state.faults.clear()
    elif request.method == "POST":
        data = await _body(request)
        unknown = set(data) - {"rules", "script", "seed", "append"}
        if unknown:
            raise ValueError(f"unknown keys: {sorted(unknown)}")
        new_rules = [rule_from_dict(r) for r in data.get("rules", [])]
        new_script = [script_from_dict(s) for s in data.get("script", [])]
        if data.get("append"):
            new_rules = state.faults.rules + new_rules
            new_script = state.faults.scripts + new_script
        seed = data.get("seed")
        state.faults.configure(new_rules, new_script, int(seed) if seed is not None else None)
    return state.faults.to_dict()


def _clock_info(state: EmulatorState) -> dict[str, Any]:
    now = state.clock.now()
    return {"now": format_iso(now), "timestamp": now, "frozen": state.clock.frozen}


async def clock(request: Request, state: EmulatorState) -> Any:
    if request.method == "POST":
        data = await _body(request)
        unknown = set(data) - {"advance", "set", "frozen"}
        if unknown:
            raise ValueError(f"unknown keys: {sorted(unknown)}")
        if "set" in data:
            frozen = data.get("frozen")
            state.clock.set(parse_iso(str(data["set"])), None if frozen is None else bool(frozen))
            state.quotas.reset_windows()
        elif "frozen" in data:
            if data["frozen"]:
                state.clock.freeze()
            else:
                state.clock.unfreeze()
        if "advance" in data:
            state.clock.advance(float(data["advance"]))
    return _clock_info(state)


async def quotas(request: Request, state: EmulatorState) -> Any:
    if request.method == "POST":
        data = await _body(request)
        reset_counts = bool(data.pop("reset_counts", False))
        state.quotas.config = quotas_from_dict(data, state.quotas.config)
        if reset_counts:
            state.quotas.reset()
    return asdict(state.quotas.config)


def _settings_info(state: EmulatorState) -> dict[str, Any]:
    known = state.known_visitors
    return {
        "step_seconds": state.step_seconds,
        "known_visitors": sorted(known) if known is not None else None,
        "trust_forwarded_for": state.trust_forwarded_for,
    }


def _rules_info(state: EmulatorState) -> dict[str, Any]:
    return {
        "join_rules": state.join_rules,
        "count_unjoined": state.count_unjoined,
        "token_lifetime": state.token_lifetime,
        "strict": state.strict,
    }


async def settings(request: Request, state: EmulatorState) -> Any:
    if request.method == "POST":
        data = await _body(request)
        unknown = set(data) - {"step_seconds", "known_visitors", "trust_forwarded_for"}
        if unknown:
            raise ValueError(f"unknown keys: {sorted(unknown)}")
        if "step_seconds" in data:
            step = float(data["step_seconds"])
            if step <= 0:
                raise ValueError("step_seconds must be positive")
            state.step_seconds = step
        if "known_visitors" in data:
            known = data["known_visitors"]
            state.known_visitors = None if known is None or known == "*" else frozenset(str(v) for v in known)
        if "trust_forwarded_for" in data:
            state.trust_forwarded_for = bool(data["trust_forwarded_for"])
    return _settings_info(state)


async def rules(request: Request, state: EmulatorState) -> Any:
    """GET/POST ``join_rules``, ``count_unjoined``, ``strict`` (bools) and ``token_lifetime`` (seconds)."""
    if request.method == "POST":
        data = await _body(request)
        unknown = set(data) - {"join_rules", "count_unjoined", "strict", "token_lifetime"}
        if unknown:
            raise ValueError(f"unknown keys: {sorted(unknown)}")
        for flag in ("join_rules", "count_unjoined", "strict"):
            if flag in data:
                setattr(state, flag, bool(data[flag]))
        if "token_lifetime" in data:
            lifetime = float(data["token_lifetime"])
            if lifetime <= 0:
                raise ValueError("token_lifetime must be positive")
            state.token_lifetime = lifetime
    return _rules_info(state)


async def tokens(request: Request, state: EmulatorState) -> Any:
    """GET: every token (``?login=``). POST ``{"login", "lifetime": s|null, "refresh": bool, "client_id"}``:
    issue a token for a login now, answered like ``POST /token`` plus the record."""
    now = state.clock.now()
    if request.method == "POST":
        data = await _body(request)
        unknown = set(data) - {"login", "lifetime", "refresh", "client_id"}
        if unknown:
            raise ValueError(f"unknown keys: {sorted(unknown)}")
        login = str(data["login"])
        lifetime = data.get("lifetime", state.token_lifetime)
        if lifetime is not None and float(lifetime) <= 0:
            raise ValueError("lifetime must be positive (or null: never expires)")
        client_id = str(data.get("client_id") or "emulator-admin")
        record = state.tokens.issue(
            login, client_id, now, float(lifetime) if lifetime is not None else None, "admin", bool(data.get("refresh"))
        )
        return {**token_answer(record, now), "record": record.to_admin(now)}
    wanted = request.query_params.get("login")
    records = [r for r in state.tokens.tokens.values() if wanted is None or r.login == wanted]
    return {"tokens": [r.to_admin(now) for r in records]}


async def token_expire(request: Request, state: EmulatorState) -> Any:
    """``{"token": t, "refresh": false}``: the token answers invalid_token from now on (its refresh token
    too when ``refresh``)."""
    data = await _body(request)
    record = state.tokens.expire(str(data["token"]), state.clock.now(), bool(data.get("refresh", False)))
    if record is None:
        raise ValueError("no such token")
    return record.to_admin(state.clock.now())


async def token_revoke(request: Request, state: EmulatorState) -> Any:
    """``{"token": t}``: forget the token and its refresh token."""
    data = await _body(request)
    record = state.tokens.revoke(str(data["token"]))
    if record is None:
        raise ValueError("no such token")
    return {"revoked": True, "login": record.login}


async def logins(request: Request, state: EmulatorState) -> Any:
    """Per login: in_flight, peak_parallel, requests, requests_today, quota_rejections (by error type
    and ``status.429``/``status.420``). POST forgets peaks and counts (``logins/reset``)."""
    if request.method == "POST":
        state.quotas.reset_login_stats()
    return {"logins": state.quotas.login_stats(state.clock.now())}


def _counter_info(state: EmulatorState, counter: int) -> dict[str, Any]:
    settings = state.counters.get(counter)
    return {
        "counter": counter,
        "offline_options": settings.options(),
        "enabled_at": {k: format_iso(v) if v is not None else None for k, v in settings.enabled.items()},
        "goals": [g.to_api() for g in settings.goals],
        "calls_goal_name": settings.calls_goal_name,
    }


async def counter_settings(request: Request, state: EmulatorState) -> Any:
    """GET a counter's options and goals. POST ``{"offline_options": {name: 0|1}, "enabled_at": {name: iso},
    "goals": [goal, ...]}``: switch options (``enabled_at`` backdates the moment one was switched on)."""
    counter = int(request.path_params["counter"])
    if request.method == "POST":
        data = await _body(request)
        unknown = set(data) - {"offline_options", "enabled_at", "goals"}
        if unknown:
            raise ValueError(f"unknown keys: {sorted(unknown)}")
        now = state.clock.now()
        state.counters.set_options(counter, data.get("offline_options") or {}, now)
        enabled = state.counters.get(counter).enabled
        for name, value in (data.get("enabled_at") or {}).items():
            if name not in OPTIONS:
                raise ValueError(f"unknown option {name!r}")
            enabled[name] = parse_iso(str(value)) if value is not None else None
        for goal in data.get("goals") or []:
            state.counters.add_goal(counter, goal)
    return _counter_info(state, counter)


async def stats(request: Request, state: EmulatorState) -> Any:
    now = state.clock.now()
    statuses: dict[str, int] = {}
    for upload in state.store.all():
        status = upload.status(now, state.step_seconds)
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "uploads": len(state.store),
        "rows": state.store.row_count,
        "upload_statuses": statuses,
        "counts": dict(sorted(state.counts.items())),
        "quota_rejections": dict(state.quotas.rejections),
        "logins": state.quotas.login_stats(now),
        "clock": _clock_info(state),
    }


def routes() -> list[Route]:
    def route(path: str, handler: Handler, methods: list[str]) -> Route:
        return Route(f"/_emulator/{path}", _admin(handler), methods=methods)

    return [
        route("health", health, ["GET"]),
        route("uploads", uploads, ["GET"]),
        route("rows", rows, ["GET"]),
        route("reset", reset, ["POST"]),
        route("faults", faults, ["GET", "POST", "DELETE"]),
        route("clock", clock, ["GET", "POST"]),
        route("quotas", quotas, ["GET", "POST"]),
        route("settings", settings, ["GET", "POST"]),
        route("stats", stats, ["GET"]),
        route("rules", rules, ["GET", "POST"]),
        route("tokens", tokens, ["GET", "POST"]),
        route("tokens/expire", token_expire, ["POST"]),
        route("tokens/revoke", token_revoke, ["POST"]),
        route("logins", logins, ["GET"]),
        route("logins/reset", logins, ["POST"]),
        route("counters/{counter}", counter_settings, ["GET", "POST"]),
    ]
