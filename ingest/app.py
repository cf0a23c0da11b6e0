"""The ingestion service (Starlette, ASGI): provider webhooks and the generic JSON API in, calls to Redis.

Every answer follows one rule: 2xx only once Redis holds the call (in an ingest stream or in the
held stream) or once it is clear that the request reports no call; 401/403 for a missing or wrong
signature, with nothing stored; 400/422 naming the field for a malformed body; 413 above the size
limits; 503 when Redis refuses, so the provider retries. Stateless: run any number of instances.

Routes::

    GET  /healthz                           liveness
    GET  /readyz                            Redis reachable
    GET  /metrics                           Prometheus metrics of the whole deployment (worker/metrics.py)
    POST /v1/calls                          one generic JSON call
    POST /v1/calls/bulk                     NDJSON, one call per line; a per-line report
    GET|POST|OPTIONS /v1/number             the session API: a tracking number for a visitor (CORS)
    POST /v1/conversions                    one offline conversion (JSON)
    POST /v1/conversions/bulk               NDJSON, one conversion per line; a per-line report
    POST /v1/calls/{provider}/{call_id}/conversions   a conversion for an earlier call
    POST /twilio/voice                      status callbacks and <Dial action> requests
    GET  /zadarma/{account}?zd_echo=X       Zadarma's URL check
    POST /zadarma/{account}                 Zadarma notifications
    POST /mango/{account}/events/{kind}     Mango Office events (summary becomes a call)
    POST /mango/{account}/ping              Mango Office availability check
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST
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
from ingest.sessions import SessionService
from ingest.signatures import mango_valid, twilio_valid, zadarma_valid
from worker import metrics
from worker.call_refs import record_conversion
from worker.calls import FieldError
from worker.errors import ProducerError
from worker.inbound import InboundCall
from worker.intake import Intake, Outcome, build_intake
from worker.kinds import UploadKind
from worker.producer import SubmitResult
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
        self.sessions = SessionService(settings, self.runtime)
        self.registry = metrics.registry(self.runtime.redis, self.runtime.keys, settings)
        # Requests count into memory, written to Redis every second: no round trip per request.
        self.runtime.metrics.buffer(interval=1.0)
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
                await self.count_refused(request, "too_large")
                return error_response(413, "the body is larger than this endpoint accepts")
            except SignatureError as error:
                log.warning("signature_refused", path=request.url.path, status=error.status, why=str(error))
                await self.count_refused(request, "signature")
                return error_response(error.status, str(error))
            except InputError as error:
                await self.count_refused(request, _error_reason(error.errors))
                return error_response(error.status, str(error), error.errors)
            except ProducerError as error:
                log.error("store_failed", path=request.url.path, error=str(error))
                await self.count_refused(request, "store_failed")
                return error_response(503, "calls cannot be stored right now; retry later", ())

        return guarded

    def api_auth(self, handler: Handler) -> Handler:
        """The generic endpoints' bearer token (``ingest_api_token``), when one is configured."""
        token = self.settings.ingest_api_token
        if token is None:
            return handler
        expected = f"Bearer {token.get_secret_value()}".encode()

        async def checked(request: Request) -> Response:
            given = request.headers.get("authorization", "")
            if not given:
                raise SignatureError(401, "Authorization: Bearer <token> is required")
            if not hmac.compare_digest(given.encode(), expected):
                raise SignatureError(403, "the bearer token is not valid")
            return await handler(request)

        return checked

    async def submit(self, calls: Sequence[InboundCall]) -> list[Outcome]:
        return await run_in_threadpool(self.accept, calls)

    def accept(self, calls: Sequence[InboundCall]) -> list[Outcome]:
        """The intake's answer for ``calls``, counted per provider and outcome (worker/metrics.py)."""
        outcomes = self.intake.accept(calls)
        self.runtime.metrics.intake((c.provider for c in calls), (_status_reason(o) for o in outcomes))
        return outcomes

    async def count_refused(self, request: Request, reason: str) -> None:
        provider = _provider_of(request.url.path)
        await run_in_threadpool(self.runtime.metrics.intake, [provider], [("rejected", reason)])

    async def count_ignored(self, provider: str) -> None:
        await run_in_threadpool(self.runtime.metrics.intake, [provider], [("ignored", "")])

    @staticmethod
    def single_answer(outcome: Outcome) -> Response:
        if outcome.status == "rejected":
            return error_response(422, outcome.reason, outcome.errors)
        return json_response(outcome.to_dict())

    # --- Health ----------------------------------------------------------------------------------
    async def healthz(self, _request: Request) -> Response:
        return json_response({"status": "ok"})

    async def metrics(self, _request: Request) -> Response:
        await run_in_threadpool(self.runtime.metrics.flush)  # this process's own counts, up to now
        body = await run_in_threadpool(metrics.render, self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

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
        report = self._bulk_report(lines)
        items = [{"line": number, **report[number]} for number, _ in lines]
        totals = {status: 0 for status in ("accepted", "held", "ignored", "rejected")}
        for item in items:
            totals[item["status"]] += 1
        if totals["rejected"] == len(items):
            return json_response({"error": "no line holds a valid call", **totals, "lines": items}, 422)
        return json_response({**totals, "lines": items})

    def _bulk_report(self, lines: list[tuple[int, bytes]]) -> dict[int, dict[str, Any]]:
        if not lines:
            raise InputError.one("body", "ndjson", "must hold one JSON object per line; it is empty", status=400)
        if len(lines) > self.settings.ingest_max_bulk_lines:
            raise BodyTooLarge
        report: dict[int, dict[str, Any]] = {}
        calls: list[tuple[int, InboundCall]] = []
        refused: list[str] = []
        for number, line in lines:
            try:
                calls.append((number, generic.to_call(generic.parse_json(line))))
            except InputError as error:
                report[number] = Outcome("rejected", str(error), tuple(error.errors)).to_dict()
                refused.append(_error_reason(error.errors))
        outcomes = self.accept([call for _, call in calls]) if calls else []
        for (number, call), outcome in zip(calls, outcomes, strict=True):
            report[number] = {"call_id": call.call_id, **outcome.to_dict()}
        self.runtime.metrics.intake(["generic"] * len(refused), [("rejected", r) for r in refused])
        return report

    # --- Offline conversions ---------------------------------------------------------------------
    async def conversion_one(self, request: Request) -> Response:
        body = await read_body(request, self.settings.ingest_max_body_bytes)
        doc = _object(generic.parse_json(body))
        result = await run_in_threadpool(self.runtime.producer.submit, [doc], UploadKind.CONVERSIONS)
        return _one_result(result)

    async def conversions_bulk(self, request: Request) -> Response:
        body = await read_body(request, self.settings.ingest_max_bulk_bytes)
        return await run_in_threadpool(self._conversions_bulk, body)

    def _conversions_bulk(self, body: bytes) -> Response:
        lines = [(number, line) for number, line in enumerate(body.split(b"\n"), start=1) if line.strip()]
        if not lines:
            raise InputError.one("body", "ndjson", "must hold one JSON object per line; it is empty", status=400)
        if len(lines) > self.settings.ingest_max_bulk_lines:
            raise BodyTooLarge
        report: dict[int, dict[str, Any]] = {}
        docs: list[tuple[int, dict[str, Any]]] = []
        for number, line in lines:
            try:
                docs.append((number, _object(generic.parse_json(line))))
            except InputError as error:
                report[number] = Outcome("rejected", str(error), tuple(error.errors)).to_dict()
        if docs:
            result = self.runtime.producer.submit([doc for _, doc in docs], UploadKind.CONVERSIONS)
            for accepted in result.accepted:
                report[docs[accepted.index][0]] = {"conversion_id": accepted.source_id, "status": "accepted"}
            for rejection in result.rejected:
                report[docs[rejection.index][0]] = Outcome("rejected", rejection.reason, rejection.errors).to_dict()
        items = [{"line": number, **report[number]} for number, _ in lines]
        accepted_count = sum(1 for item in items if item["status"] == "accepted")
        totals = {"accepted": accepted_count, "rejected": len(items) - accepted_count}
        if accepted_count == 0:
            return json_response({"error": "no line holds a valid conversion", **totals, "lines": items}, 422)
        return json_response({**totals, "lines": items})

    async def call_conversion(self, request: Request) -> Response:
        body = await read_body(request, self.settings.ingest_max_body_bytes)
        doc = _object(generic.parse_json(body))
        unknown = sorted(set(doc) - {"Target", "DateTime", "Price", "Currency", "conversion_id"})
        if unknown:
            raise InputError.one(unknown[0], "extra_forbidden", "is not a known field", status=422)
        if "Target" not in doc or "DateTime" not in doc:
            missing = "Target" if "Target" not in doc else "DateTime"
            raise InputError.one(missing, "missing", "is required", status=422)
        provider, call_id = request.path_params["provider"], request.path_params["call_id"]
        result = await run_in_threadpool(
            lambda: record_conversion(
                self.runtime,
                provider,
                call_id,
                target=str(doc["Target"]),
                date_time=doc["DateTime"],
                price=doc.get("Price"),
                currency=doc.get("Currency"),
                conversion_id=doc.get("conversion_id"),
            )
        )
        return _one_result(result)

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
        else:
            await self.count_ignored("twilio")
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
            await self.count_ignored("zadarma")
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
            await self.count_ignored("mango")
            return json_response({"status": "ignored", "reason": result})
        return self.single_answer((await self.submit([result]))[0])

    async def mango_ping(self, request: Request) -> Response:
        if request.path_params["account"] not in self.settings.mango_accounts:
            return error_response(404, "no such Mango Office account is configured")
        return json_response({"status": "ok"})

    # --- Application -----------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        g, a = self.guard, self.api_auth
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/v1/calls", g(a(self.generic_one)), methods=["POST"]),
            Route("/v1/calls/bulk", g(a(self.generic_bulk)), methods=["POST"]),
            Route("/v1/calls/{provider}/{call_id}/conversions", g(a(self.call_conversion)), methods=["POST"]),
            Route("/v1/number", self.sessions.number, methods=["GET", "POST"]),
            Route("/v1/number", self.sessions.preflight, methods=["OPTIONS"]),
            Route("/v1/conversions", g(a(self.conversion_one)), methods=["POST"]),
            Route("/v1/conversions/bulk", g(a(self.conversions_bulk)), methods=["POST"]),
            Route("/twilio/voice", g(self.twilio_voice), methods=["POST"]),
            Route("/zadarma/{account}", g(self.zadarma_echo), methods=["GET"]),
            Route("/zadarma/{account}", g(self.zadarma_event), methods=["POST"]),
            Route("/mango/{account}/ping", g(self.mango_ping), methods=["POST", "GET"]),
            Route("/mango/{account}/events/{kind}", g(self.mango_event), methods=["POST"]),
        ]


def _object(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise InputError.one("body", "object", "must be one JSON object", status=400)
    return doc


def _one_result(result: SubmitResult) -> Response:
    if result.rejected:
        rejection = result.rejected[0]
        return error_response(422, rejection.reason, rejection.errors)
    return json_response({"status": "accepted", "conversion_id": result.accepted[0].source_id})


def _provider_of(path: str) -> str:
    first = path.strip("/").split("/", 1)[0]
    return first if first in ("twilio", "zadarma", "mango") else "generic"


def _error_reason(errors: Sequence[FieldError]) -> str:
    """``field:rule`` of the first error: a bounded label (fields and rules are the code's own words)."""
    return f"{errors[0].field}:{errors[0].rule}" if errors else "invalid"


def _status_reason(outcome: Outcome) -> tuple[str, str]:
    if outcome.status == "rejected":
        return "rejected", _error_reason(outcome.errors)
    if outcome.status == "held":
        return "held", metrics.reason_word(outcome.reason)
    return outcome.status, ""


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
