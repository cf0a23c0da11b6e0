"""The status API (issue 19): where is a call, and how is a counter doing. JSON, read only.

Every route needs ``Authorization: Bearer <token>``: the operator's ``CALLTRACK_STATUS_API_TOKEN``
(every counter), or a client API key with the ``status`` scope (``ingest/tenancy.py``: its client's
counters only; another client's counter or call answers 404 exactly as an unknown one). The admin
token is not accepted here (issue 22: it works on ``/admin/`` only). Without the status token, only
client keys are taken (anything else answers 404). Missing credentials are 401, a wrong token 403,
both with ``{"error": ...}``. Bad input is 422 naming the
field and the rule. The schema of every route is ``GET /openapi.json`` (:mod:`ingest.routes.openapi`).

    GET /v1/calls/{provider}/{call_id}                     where the call is, with times
    GET /v1/conversions/{source}/{conversion_id}?counter_id=N   the same for a conversion
    GET /v1/chats/{source}/{chat_id}?counter_id=N          the same for a chat
    GET /v1/counters/{counter}                             the counter's figures
    GET /v1/counters/{counter}/uploads?page=&per_page=&kind=   its batches and uploads, newest first
    GET /openapi.json                                      the OpenAPI 3.1 document
"""

from __future__ import annotations

from typing import Any

import structlog
from pydantic import SecretStr
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingest.core import Handler, IngestCore, bearer_ok, error_response, json_response
from ingest.routes.openapi import document
from ingest.tenancy import OPERATOR, KeyRefused, caller_of, client_key
from worker.model.kinds import UploadKind
from worker.ops.counter_view import counter_figures, counter_uploads
from worker.ops.status import Whereabouts, where_call, where_event

log = structlog.get_logger(__name__)
_NAME_MAX = 256


class InputProblem(Exception):
    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.field, self.rule = field, rule


def status_tokens(core: IngestCore) -> list[SecretStr]:
    """The operator's read credentials: the status token only (never the admin token)."""
    return [t for t in (core.settings.status_api_token,) if t is not None]


def _positive(value: str, name: str, *, default: int | None = None, most: int | None = None) -> int:
    if value == "" and default is not None:
        return default
    if not value.isdigit() or int(value) <= 0:
        raise InputProblem(name, "positive_integer", f"{name} must be a positive integer")
    if most is not None and int(value) > most:
        raise InputProblem(name, "at_most", f"{name} must be at most {most}")
    return int(value)


def _name(value: str, name: str) -> str:
    if not value or len(value) > _NAME_MAX or any(ord(c) < 32 for c in value):
        raise InputProblem(name, "name", f"{name} must be 1 to {_NAME_MAX} printable characters")
    return value


class StatusRoutes:
    def __init__(self, core: IngestCore) -> None:
        self.core = core

    def _auth(self, handler: Handler) -> Handler:
        tokens = status_tokens(self.core)

        async def checked(request: Request) -> Response:
            given = request.headers.get("authorization", "")
            key = client_key(given)
            if key is not None:
                try:
                    request.state.caller = await self.core.tenancy.caller(key, "status")
                except KeyRefused as error:
                    return error_response(error.status, str(error))
            elif not tokens:
                return error_response(404, "the status API is off: set CALLTRACK_STATUS_API_TOKEN or use a client key")
            elif not given:
                return json_response(
                    {"error": "Authorization: Bearer <token> is required (CALLTRACK_STATUS_API_TOKEN)"},
                    401,
                    headers={"WWW-Authenticate": 'Bearer realm="calltrack-status"'},
                )
            elif not bearer_ok(given, tokens):
                return error_response(403, "the bearer token is not valid")
            else:
                request.state.caller = OPERATOR
            try:
                return await handler(request)
            except InputProblem as problem:
                body = {"error": str(problem), "errors": [{"field": problem.field, "rule": problem.rule}]}
                return json_response(body, 422)
            except RedisError as error:
                log.error("status_redis_error", error=type(error).__name__)
                return error_response(503, "Redis is not answering; retry later")

        return checked

    async def call(self, request: Request) -> Response:
        provider = _name(request.path_params["provider"], "provider")
        call_id = _name(request.path_params["call_id"], "call_id")
        found = await run_in_threadpool(where_call, self.core.runtime, provider, call_id)
        if found.found and not await self._owns(request, found.counter_id):
            found = Whereabouts(found.kind, "unknown")  # another client's call: exactly as an unknown one
        if not found.found:
            days = self.core.settings.dedup_window_days
            message = f"no call {call_id!r} from {provider!r} is known (calls are remembered for {days} days)"
            return json_response({"error": message, "provider": provider, "call_id": call_id, **found.to_dict()}, 404)
        return json_response({"provider": provider, "call_id": call_id, **found.to_dict()})

    def event(self, kind: UploadKind, id_name: str) -> Handler:
        async def handler(request: Request) -> Response:
            source = _name(request.path_params["source"], "source")
            item_id = _name(request.path_params[id_name], id_name)
            counter = _positive(request.query_params.get("counter_id", ""), "counter_id")
            if await self._owns(request, counter):
                found = await run_in_threadpool(where_event, self.core.runtime, kind, counter, source, item_id)
            else:
                found = Whereabouts(kind.value, "unknown", counter)
            ident = {"source": source, id_name: item_id}
            if not found.found:
                message = f"no {kind.value[:-1]} {item_id!r} from {source!r} is known for counter {counter}"
                return json_response({"error": message, **ident, **found.to_dict()}, 404)
            return json_response({**ident, **found.to_dict()})

        return handler

    async def counter(self, request: Request) -> Response:
        counter = _positive(request.path_params["counter"], "counter")
        if not await self._owns(request, counter):
            return _unknown_counter(counter)
        figures = await run_in_threadpool(counter_figures, self.core.runtime, counter)
        if not figures["known"]:
            return _unknown_counter(counter)
        return json_response(figures)

    async def uploads(self, request: Request) -> Response:
        counter = _positive(request.path_params["counter"], "counter")
        q = request.query_params
        page = _positive(q.get("page", ""), "page", default=1)
        per_page = _positive(q.get("per_page", ""), "per_page", default=50, most=500)
        kind = q.get("kind") or None
        if kind is not None and kind not in {k.value for k in UploadKind}:
            raise InputProblem("kind", "one_of", "kind must be one of calls, conversions, chats")
        if not await self._owns(request, counter):
            return _unknown_counter(counter)
        result: dict[str, Any] = await run_in_threadpool(
            lambda: counter_uploads(self.core.runtime, counter, page=page, per_page=per_page, kind=kind)
        )
        return json_response(result)

    async def _owns(self, request: Request, counter: int | None) -> bool:
        """Whether the request's caller may read ``counter`` (the operator: any; a client: its own)."""
        caller = caller_of(request)
        if caller.operator:
            return True
        return await run_in_threadpool(self.core.tenancy.owns, caller, counter)

    async def openapi(self, request: Request) -> Response:
        return json_response(document())

    def routes(self) -> list[Route]:
        a, g = self._auth, self.core.guard
        return [
            Route("/v1/calls/{provider}/{call_id}", g(a(self.call)), methods=["GET"]),
            Route(
                "/v1/conversions/{source}/{conversion_id}",
                g(a(self.event(UploadKind.CONVERSIONS, "conversion_id"))),
                methods=["GET"],
            ),
            Route("/v1/chats/{source}/{chat_id}", g(a(self.event(UploadKind.CHATS, "chat_id"))), methods=["GET"]),
            Route("/v1/counters/{counter}", g(a(self.counter)), methods=["GET"]),
            Route("/v1/counters/{counter}/uploads", g(a(self.uploads)), methods=["GET"]),
            Route("/openapi.json", g(a(self.openapi)), methods=["GET"]),
        ]


def _unknown_counter(counter: int) -> Response:
    return json_response({"error": f"counter {counter} is not known here", "counter_id": counter}, 404)
