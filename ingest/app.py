"""The ingestion service (Starlette, ASGI): provider webhooks and the generic JSON API in, calls to Redis.

Every answer follows one rule: 2xx only once Redis holds the call (in an ingest stream or in the
held stream) or once it is clear that the request reports no call; 401/403 for a missing or wrong
signature, with nothing stored; 400/422 naming the field for a malformed body; 413 above the size
limits; 503 when Redis refuses, so the provider retries. Stateless: run any number of instances.

Routes::

    GET  /healthz                           liveness
    GET  /readyz                            Redis reachable
    POST /v1/calls                          one generic JSON call
    POST /v1/calls/bulk                     NDJSON, one call per line; a per-line report
    POST /twilio/voice                      status callbacks and <Dial action> requests
    GET  /zadarma/{account}?zd_echo=X       Zadarma's URL check
    POST /zadarma/{account}                 Zadarma notifications
    POST /mango/{account}/events/{kind}     Mango Office events (summary becomes a call)
    POST /mango/{account}/ping              Mango Office availability check
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson
import structlog
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from config.settings import Settings
from ingest.input import InputError, parse_form
from ingest.providers import generic, mango, twilio, zadarma
from ingest.providers.config import ProviderConfig
from ingest.signatures import mango_valid, twilio_valid, zadarma_valid
from worker.calls import FieldError
from worker.errors import ProducerError
from worker.inbound import InboundCall
from worker.intake import Intake, Outcome, build_intake
from worker.runtime import Runtime

log = structlog.get_logger(__name__)
Handler = Callable[[Request], Awaitable[Response]]


class BodyTooLarge(Exception):
    """The body is over the limit of its endpoint."""


class SignatureError(Exception):
    """No signature (401) or a wrong one (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, message: str, errors: Sequence[FieldError] = ()) -> Response:
    body: dict[str, Any] = {"error": message}
    if errors:
        body["errors"] = [{"field": e.field, "rule": e.rule, "message": e.message} for e in errors]
    return json_response(body, status)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class IngestService:
    """The handlers, over one process-wide runtime (one Redis client) and intake."""

    def __init__(self, settings: Settings, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.runtime = runtime or Runtime(settings)
        self.intake: Intake = build_intake(self.runtime)
        self.configs = {
            "twilio": ProviderConfig.from_settings(settings, "twilio"),
            "zadarma": ProviderConfig.from_settings(settings, "zadarma", settings.zadarma_timezone),
            "mango": ProviderConfig.from_settings(settings, "mango"),
        }

    # --- Plumbing --------------------------------------------------------------------------------
    def guard(self, handler: Handler) -> Handler:
        """Turns the service's exceptions into their answers; nothing else may reach the client as 500."""

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except BodyTooLarge:
                return error_response(413, "the body is larger than this endpoint accepts")
            except SignatureError as error:
                log.warning("signature_refused", path=request.url.path, status=error.status, why=str(error))
                return error_response(error.status, str(error))
            except InputError as error:
                return error_response(error.status, str(error), error.errors)
            except ProducerError as error:
                log.error("store_failed", path=request.url.path, error=str(error))
                return error_response(503, "calls cannot be stored right now; retry later", ())

        return guarded

    async def submit(self, calls: Sequence[InboundCall]) -> list[Outcome]:
        return await run_in_threadpool(self.intake.accept, calls)

    @staticmethod
    def single_answer(outcome: Outcome) -> Response:
        if outcome.status == "rejected":
            return error_response(422, outcome.reason, outcome.errors)
        return json_response(outcome.to_dict())

    # --- Health ----------------------------------------------------------------------------------
    async def healthz(self, _request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, _request: Request) -> Response:
        try:
            await run_in_threadpool(self.runtime.redis.ping)
        except RedisError as error:
            return json_response({"status": "unavailable", "redis": type(error).__name__}, 503)
        return json_response({"status": "ready"})

    # --- Generic JSON ----------------------------------------------------------------------------
    async def generic_one(self, request: Request) -> Response:
        body = await read_body(request, self.settings.ingest_max_body_bytes)
        call = generic.to_call(generic.parse_json(body))
        return self.single_answer((await self.submit([call]))[0])

    async def generic_bulk(self, request: Request) -> Response:
        body = await read_body(request, self.settings.ingest_max_bulk_bytes)
        return await run_in_threadpool(self._bulk, body)

    def _bulk(self, body: bytes) -> Response:
        lines = [(number, line) for number, line in enumerate(body.split(b"\n"), start=1) if line.strip()]
        if not lines:
            raise InputError.one("body", "ndjson", "must hold one JSON object per line; it is empty", status=400)
        if len(lines) > self.settings.ingest_max_bulk_lines:
            raise BodyTooLarge
        report: dict[int, dict[str, Any]] = {}
        calls: list[tuple[int, InboundCall]] = []
        for number, line in lines:
            try:
                calls.append((number, generic.to_call(generic.parse_json(line))))
            except InputError as error:
                report[number] = Outcome("rejected", str(error), tuple(error.errors)).to_dict()
        outcomes = self.intake.accept([call for _, call in calls]) if calls else []
        for (number, call), outcome in zip(calls, outcomes, strict=True):
            report[number] = {"call_id": call.call_id, **outcome.to_dict()}
        items = [{"line": number, **report[number]} for number, _ in lines]
        totals = {status: 0 for status in ("accepted", "held", "ignored", "rejected")}
        for item in items:
            totals[item["status"]] += 1
        if totals["rejected"] == len(items):
            return json_response({"error": "no line holds a valid call", **totals, "lines": items}, 422)
        return json_response({**totals, "lines": items})

    # --- Twilio ----------------------------------------------------------------------------------
    async def twilio_voice(self, request: Request) -> Response:
        body = await read_body(request, self.settings.ingest_max_body_bytes)
        pairs = parse_form(body)
        form = dict(pairs)
        signature = request.headers.get("x-twilio-signature", "")
        if not signature:
            raise SignatureError(401, "X-Twilio-Signature is missing")
        token = self.settings.twilio_auth_tokens.get(form.get("AccountSid", ""))
        url = self._public_url(request)
        settings_header = request.headers.get("x-twilio-webhooks-signature-settings", "")
        if token is None or not twilio_valid(token.get_secret_value(), [url], pairs, signature, settings_header):
            raise SignatureError(403, "X-Twilio-Signature does not match this request for its AccountSid")
        result = twilio.to_call(form, self.configs["twilio"])
        if isinstance(result, InboundCall):
            outcome = (await self.submit([result]))[0]
            if outcome.status == "rejected":
                return self.single_answer(outcome)
        return Response(twilio.EMPTY_TWIML, media_type="text/xml")

    def _public_url(self, request: Request) -> str:
        base = self.settings.ingest_public_url
        if base is None:
            return str(request.url)
        query = request.url.query
        return str(base).rstrip("/") + request.url.path + (f"?{query}" if query else "")

    # --- Zadarma ---------------------------------------------------------------------------------
    async def zadarma_echo(self, request: Request) -> Response:
        if request.path_params["account"] not in self.settings.zadarma_secrets:
            return error_response(404, "no such Zadarma account is configured")
        echo = request.query_params.get("zd_echo")
        if echo is None or len(echo) > 256:
            raise InputError.one("zd_echo", "required", "is required (at most 256 characters)", status=400)
        return PlainTextResponse(echo)

    async def zadarma_event(self, request: Request) -> Response:
        body = await read_body(request, self.settings.ingest_max_body_bytes)
        form = dict(parse_form(body))
        signature = request.headers.get("signature", "")
        if not signature:
            raise SignatureError(401, "the Signature header is missing")
        secret = self.settings.zadarma_secrets.get(request.path_params["account"])
        if secret is None or not zadarma_valid(secret.get_secret_value(), form, signature):
            raise SignatureError(403, "Signature does not match this request for this account")
        result = zadarma.to_call(form, self.configs["zadarma"])
        if isinstance(result, str):
            return json_response({"status": "ignored", "reason": result})
        return self.single_answer((await self.submit([result]))[0])

    # --- Mango Office ----------------------------------------------------------------------------
    async def _mango_form(self, request: Request) -> dict[str, str]:
        body = await read_body(request, self.settings.ingest_max_body_bytes)
        form = dict(parse_form(body))
        if not form.get("sign"):
            raise SignatureError(401, "sign is missing")
        secret = self.settings.mango_accounts.get(request.path_params["account"])
        if secret is None:
            raise SignatureError(403, "sign does not match this request for this account")
        key, _, salt = secret.get_secret_value().partition(":")
        if not mango_valid(key, salt, form):
            raise SignatureError(403, "sign does not match this request for this account")
        return form

    async def mango_event(self, request: Request) -> Response:
        form = await self._mango_form(request)
        if request.path_params["kind"] != "summary":
            return json_response({"status": "ignored", "reason": "only events/summary reports a finished call"})
        result = mango.to_call(mango.parse_json(form.get("json", "")), self.configs["mango"])
        if isinstance(result, str):
            return json_response({"status": "ignored", "reason": result})
        return self.single_answer((await self.submit([result]))[0])

    async def mango_ping(self, request: Request) -> Response:
        if request.path_params["account"] not in self.settings.mango_accounts:
            return error_response(404, "no such Mango Office account is configured")
        return json_response({"status": "ok"})

    # --- Application -----------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        g = self.guard
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/v1/calls", g(self.generic_one), methods=["POST"]),
            Route("/v1/calls/bulk", g(self.generic_bulk), methods=["POST"]),
            Route("/twilio/voice", g(self.twilio_voice), methods=["POST"]),
            Route("/zadarma/{account}", g(self.zadarma_echo), methods=["GET"]),
            Route("/zadarma/{account}", g(self.zadarma_event), methods=["POST"]),
            Route("/mango/{account}/ping", g(self.mango_ping), methods=["POST", "GET"]),
            Route("/mango/{account}/events/{kind}", g(self.mango_event), methods=["POST"]),
        ]


def create_app(settings: Settings, runtime: Runtime | None = None) -> Starlette:
    """The ASGI application. Owns the runtime it creates (closed at shutdown), not one passed in."""
    service = IngestService(settings, runtime)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        if runtime is None:
            service.runtime.close()

    app = Starlette(routes=service.routes(), lifespan=lifespan)
    app.state.service = service
    return app
