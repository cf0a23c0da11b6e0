"""Starlette application: the Metrica endpoints, the Yandex ID stand-in, the ``/_emulator`` admin API and
the HTML page."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from emulator import admin, management, oauth
from emulator.access import authenticate, check_scopes, client_ip, login_of_request
from emulator.apicall import (
    Call,
    Operation,
    error_response,
    json_response,
    optional_int,
    positive_int,
    reshape,
)
from emulator.config import EmulatorConfig
from emulator.errors import (
    AccessDenied,
    ApiError,
    BackendError,
    InvalidParameter,
    InvalidUploading,
    MethodNotAllowed,
    NotFound,
    error_body,
)
from emulator.faults import Decision
from emulator.formdata import extract_part
from emulator.html import render_index
from emulator.quotas import group_of
from emulator.state import EmulatorState
from emulator.store import Upload
from emulator.validation import CALLS, CHATS, CONVERSIONS, check_client_id_type, check_comment, parse_file

__all__ = ["Call", "EmulatorApp", "Operation", "create_app", "json_response"]

RAW_SEND_KEY = "emulator.raw_send"
OFFLOAD_BYTES = 256 * 1024  # parse bigger files in a worker thread to keep the loop responsive
MAX_LIMIT = 10000


def state_of(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


class _TruncatedResponse(Response):
    """Fallback drop: headers promising a body, then the connection breaks."""

    def __init__(self) -> None:
        super().__init__(status_code=200, headers={"content-length": "1000"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        raise ConnectionAbortedError("emulator: injected dropped connection")


class _Dropped(Response):
    """Stands for a dropped connection; never delivered."""


async def drop_connection(request: Request) -> Response:
    """Close the client connection without an answer. The returned response is never delivered."""
    send = request.scope.get(RAW_SEND_KEY)
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    state_of(request).counts["dropped"] += 1
    if transport is None or not hasattr(cycle, "disconnected"):
        return _TruncatedResponse()
    transport.close()
    for _ in range(200):  # let uvicorn see the disconnect so it does not answer 500 itself
        if getattr(cycle, "disconnected", True):
            break
        await asyncio.sleep(0.001)
    return _Dropped(status_code=500)


async def guarded(request: Request, endpoint: str, kind: str, operation: Operation) -> Response:
    """Run one API request through quotas, auth, access checks and faults, then ``operation``.

    Requests without ``{counter_id}`` in the path (the counters list) skip the counter checks."""
    state = state_of(request)
    state.counts["requests"] += 1
    state.counts[f"requests.{endpoint}"] += 1
    try:
        now = state.clock.now()
        try:
            state.quotas.check_ip(client_ip(request, state.trust_forwarded_for), now)
        except ApiError as error:
            login = login_of_request(state, request)
            if login is not None:
                state.quotas.note_rejection(login, error.error_type)
            raise
        account = authenticate(state, request)
        check_scopes(state, request, endpoint)
        raw_counter = request.path_params.get("counter_id")
        counter = positive_int(raw_counter, "counterId") if raw_counter is not None else 0
        state.quotas.acquire_parallel(account.login)
        try:
            state.quotas.count_daily(account.login, now, group_of(request.method))
            if counter and not state.counter_exists(counter):
                raise NotFound(f"Counter {counter} not found", "counterId")
            if counter and not state.can_access(account, counter):
                raise AccessDenied(f"Access to counter {counter} is denied", "counterId")
            decision = state.faults.decide(endpoint, counter)
            response = await _with_faults(Call(request, state, account, counter, kind), decision, operation)
        finally:
            state.quotas.release_parallel(account.login)
    except ApiError as error:
        response = error_response(error)
    except ClientDisconnect:
        # The client went away mid-body (a killed worker): nothing was stored, nobody to answer.
        state.counts["status.client_gone"] += 1
        return Response(status_code=499)
    dropped = isinstance(response, _Dropped | _TruncatedResponse)
    state.counts["status.dropped" if dropped else f"status.{response.status_code}"] += 1
    return response


async def _with_faults(call: Call, decision: Decision, operation: Operation) -> Response:
    request, state = call.request, call.state
    if decision.action != "pass":
        state.counts[f"faults.{decision.action}"] += 1
    if decision.latency > 0:
        state.counts["faults.latency"] += 1
        await asyncio.sleep(decision.latency)
    if decision.action == "error":
        if decision.body is not None:
            return json_response(decision.body, decision.status)
        error_type = decision.error_type or BackendError.error_type
        message = decision.message or f"Injected {error_type}"
        body = error_body(decision.status, error_type, message, request.url.path)
        return json_response(body, decision.status)
    if decision.action == "drop_before_store":
        await request.body()
        return await drop_connection(request)
    if decision.action == "drop_after_store":
        with contextlib.suppress(ApiError):
            await operation(call)
        return await drop_connection(request)
    response = await operation(call)
    if decision.shape is not None and 200 <= response.status_code < 300:
        return reshape(response, decision.shape)
    return response


# The unified upload's ``type`` (the reference: BASIC, the default, CALLS, CHATS) -> the kind stored.
UPLOAD_TYPES = {"BASIC": CONVERSIONS, "CALLS": CALLS, "CHATS": CHATS}


# What strict mode takes: no page documents the columns, status path or list entries of type=CALLS.
STRICT_UPLOAD_TYPES = {"BASIC": CONVERSIONS, "CHATS": CHATS}


def upload_kind(call: Call) -> str:
    """The unified endpoint's ``type``: BASIC (or absent) for offline conversions, CALLS, CHATS (strict
    mode: BASIC and CHATS only)."""
    if call.kind != CONVERSIONS:
        return call.kind
    raw = call.request.query_params.get("type")
    if raw is None or raw == "":
        return CONVERSIONS
    types = STRICT_UPLOAD_TYPES if call.state.strict else UPLOAD_TYPES
    kind = types.get(raw.upper())
    if kind is None:
        allowed = ", ".join(types)
        raise InvalidParameter(f"Parameter type has invalid value '{raw}'; allowed: {allowed}", "type")
    return kind


def _object(call: Call, upload: Upload) -> dict[str, Any]:
    """An upload object as the path's page shows it: the calls pages' objects carry no ``type``."""
    body = upload.to_api(call.state.clock.now(), call.state.step_seconds)
    if call.kind == CALLS:
        del body["type"]
    return body


async def _upload(call: Call) -> Response:
    request, state, counter = call.request, call.state, call.counter
    kind = upload_kind(call)
    params = request.query_params
    comment = params.get("comment")
    check_comment(kind, comment)
    client_id_type = params.get("client_id_type") if kind != CHATS else None
    check_client_id_type(kind, client_id_type)
    new_goal_name = params.get("new_goal_name") if call.kind == CALLS else None  # upload_calls only
    body = await request.body()
    if len(body) > state.config.max_file_bytes:
        raise InvalidUploading(f"The file is larger than {state.config.max_file_bytes} bytes", "file")
    data = extract_part(request.headers.get("content-type"), body, "file")
    created = state.clock.now()
    known = state.known_visitors
    joins = state.join_policy(counter, kind, created)
    parse = functools.partial(
        parse_file, kind, data, now=created, client_id_type=client_id_type, known_visitors=known, joins=joins,
        strict=state.strict,
    )  # fmt: skip
    parsed = await asyncio.to_thread(parse) if len(data) > OFFLOAD_BYTES else parse()
    if new_goal_name:
        settings = state.counters.get(counter)
        if settings.calls_goal_name is None:
            settings.calls_goal_name = new_goal_name
            state.counters.ensure_auto_goal(counter, new_goal_name, "call")
    if kind == CHATS:
        state.counters.ensure_auto_goal(counter, "Chat", "chat")
    upload = state.store.add(
        counter=counter,
        kind=kind,
        login=call.account.login,
        created=created,
        comment=comment,
        new_goal_name=new_goal_name,
        file=parsed,
    )
    state.counts["uploads"] += 1
    # upload_chats answers a list of one; upload_1 and uploadCalls the object under "uploading".
    item = _object(call, upload)
    answer = json_response({"uploadings": [item]} if kind == CHATS else {"uploading": item})
    if state.faults.forgets("upload", counter):
        state.store.forget(upload.id)
        state.counts["faults.forgotten"] += 1
    return answer


# Which uploads each path answers. Lenient (default): the singular uploading/{id} conversions and chats,
# the plural uploadings paths every kind (calls too: the undocumented type=CALLS), the calls paths
# calls only. Strict: only what a page documents: uploading/{id} conversions (findById_1), uploadings
# and uploadings/{id} conversions and chats (findAll_1, findAll_chats, findById_chats), calls on the
# calls paths (findCallUploadingById, findAllCallUploadings).
SCOPES = {CALLS: (CALLS,), CONVERSIONS: (CONVERSIONS, CHATS)}
UNIFIED = (CALLS, CONVERSIONS, CHATS)
STRICT_UNIFIED = (CONVERSIONS, CHATS)


def _plural(call: Call) -> bool:
    return "/offline_conversions/uploadings" in call.request.url.path


def _scopes(call: Call) -> tuple[str, ...]:
    if call.state.strict:
        return STRICT_UNIFIED if _plural(call) else (call.kind,)
    return UNIFIED if _plural(call) else SCOPES[call.kind]


async def _status(call: Call) -> Response:
    upload_id = positive_int(call.request.path_params["upload_id"], "id")
    upload = call.state.store.get(call.counter, _scopes(call), upload_id)
    if upload is None:
        raise NotFound(f"Uploading {upload_id} not found for counter {call.counter}", "id")
    item = _object(call, upload)
    # findById_chats (uploadings/{id}) answers a list of one; findById_1 and the calls page an object.
    return json_response({"uploadings": [item]} if _plural(call) else {"uploading": item})


async def _list(call: Call) -> Response:
    limit = optional_int(call.request, "limit", MAX_LIMIT, 1, MAX_LIMIT)
    offset = optional_int(call.request, "offset", 0, 0, 1 << 62)
    page = call.state.store.page(call.counter, _scopes(call), limit, offset)
    return json_response({"uploadings": [_object(call, u) for u in page]})


def _endpoint(
    endpoint: str, kind: str, operation: Operation, path: str = ""
) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        if path:  # which of the two transports a client uses: counted per path template
            state_of(request).counts[f"path.{path}"] += 1
        return await guarded(request, endpoint, kind, operation)

    return handle


async def index(request: Request) -> Response:
    state = state_of(request)
    return HTMLResponse(render_index(state))


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 405:
        message = f"Method {request.method} is not allowed here"
        return error_response(MethodNotAllowed(message, request.url.path))
    if status == 404:
        return error_response(NotFound(f"No such resource: {request.url.path}", request.url.path))
    return error_response(BackendError("Internal error", request.url.path, status))


PREFIX = "/management/v1/counter/{counter_id}/offline_conversions"


def routes() -> list[Route]:
    table = [
        ("upload_calls", "POST", "upload", CALLS, _upload),
        ("calls_uploading/{upload_id}", "GET", "status", CALLS, _status),
        ("calls_uploadings", "GET", "list", CALLS, _list),
        ("upload", "POST", "upload", CONVERSIONS, _upload),
        ("uploading/{upload_id}", "GET", "status", CONVERSIONS, _status),
        ("uploadings/{upload_id}", "GET", "status", CONVERSIONS, _status),
        ("uploadings", "GET", "list", CONVERSIONS, _list),
    ]
    api = [
        Route(f"{PREFIX}/{path}", _endpoint(endpoint, kind, operation, path), methods=[method])
        for path, method, endpoint, kind, operation in table
    ]
    for path, methods, operation in management.TABLE:
        handlers = {method: _endpoint("management", "management", op) for method, op in operation.items()}
        api.append(Route(path, _dispatch(handlers), methods=methods))
    api.append(Route("/", index, methods=["GET"]))
    return api + oauth.routes() + admin.routes()


def _dispatch(
    handlers: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        return await handlers[request.method](request)

    return handle


class EmulatorApp:
    """ASGI entry point; remembers the server's raw ``send`` so a handler can drop the connection."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.state = EmulatorState(config or EmulatorConfig())
        self.starlette = Starlette(routes=routes(), exception_handlers={HTTPException: http_error})
        self.starlette.state.emulator = self.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND_KEY] = send
        await self.starlette(scope, receive, send)


def create_app(config: EmulatorConfig | None = None) -> EmulatorApp:
    """Build the ASGI app for ``config`` (defaults when None)."""
    return EmulatorApp(config)
