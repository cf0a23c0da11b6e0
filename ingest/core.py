"""What every router of the ingestion service shares: the runtime, intake, answers and guards.

Every answer follows one rule: 2xx only once Redis holds the call (in an ingest stream or in the
held stream) or once it is clear that the request reports no call; 401/403 for a missing or wrong
signature, with nothing stored; 400/422 naming the field for a malformed body; 413 above the size
limits; 503 when Redis refuses, so the provider retries.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import structlog
from pydantic import SecretStr
from redis.asyncio import Redis as AsyncRedis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from config.settings import Settings
from ingest.edge import BodyTimeout, BodyTooLarge, client_address, is_loopback_host
from ingest.input import InputError
from ingest.providers.config import ProviderConfig
from ingest.tenancy import OPERATOR, KeyRefused, Tenancy, client_key
from worker.dataplane.steps import run_async
from worker.delivery.producer import SubmitResult
from worker.errors import ForeignCallError, HeldAccountFullError, HeldFullError, ProducerError
from worker.intake.service import Intake, Outcome, build_intake
from worker.model.fields import FieldError
from worker.model.inbound import InboundCall
from worker.ops import metrics
from worker.runtime import Runtime

log = structlog.get_logger(__name__)
Handler = Callable[[Request], Awaitable[Response]]


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


class IngestCore:
    """One process-wide runtime (one Redis client) and intake, and the plumbing every router uses."""

    def __init__(self, settings: Settings, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.runtime = runtime or Runtime(settings)
        self.intake: Intake = build_intake(self.runtime)
        self.tenancy = Tenancy(self.runtime)
        # Requests count into memory, written to Redis every second: no round trip per request.
        self.runtime.metrics.buffer(interval=1.0)
        self.configs = {
            "twilio": ProviderConfig.from_settings(settings, "twilio"),
            "zadarma": ProviderConfig.from_settings(settings, "zadarma", settings.zadarma_timezone),
            "mango": ProviderConfig.from_settings(settings, "mango"),
        }

    def guard(self, handler: Handler) -> Handler:
        """Turns the service's exceptions into their answers; nothing else may reach the client as 500."""

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except BodyTooLarge as error:
                await self.count_refused(request, "too_large")
                return error_response(413, str(error))
            except BodyTimeout as error:
                await self.count_refused(request, "too_slow")
                return json_response({"error": str(error)}, 408, {"Connection": "close"})
            except SignatureError as error:
                log.warning("signature_refused", path=request.url.path, status=error.status, why=str(error))
                await self.count_refused(request, "signature")
                return error_response(error.status, str(error))
            except InputError as error:
                await self.count_refused(request, error_reason(error.errors))
                return error_response(error.status, str(error), error.errors)
            except ForeignCallError as error:  # a client's call for another client's counter (issue 22)
                log.warning("foreign_call_refused", path=request.url.path, reason=error.reason)
                await self.count_refused(request, error.reason)
                return error_response(403, str(error))
            except HeldAccountFullError as error:  # one client's held share, not the shared stream
                log.error("held_full_account", path=request.url.path)
                await self.count_refused(request, "held_full_account")
                return error_response(503, str(error))
            except HeldFullError as error:
                log.error("held_full", path=request.url.path)
                await self.count_refused(request, "held_full")
                return error_response(503, str(error))
            except ProducerError as error:
                log.error("store_failed", path=request.url.path, error=str(error))
                await self.count_refused(request, "store_failed")
                return error_response(503, "calls cannot be stored right now; retry later", ())

        return guarded

    def api_auth(self, handler: Handler) -> Handler:
        """The generic endpoints' credentials: a client API key with the ``ingest`` scope (its client's
        counters only, ``ingest/tenancy.py``), or the operator's bearer token (``ingest_api_token``,
        every counter). Without that token, only loopback clients (or anyone, with
        ``ingest_allow_anonymous``) may call them as the operator."""
        token = self.settings.ingest_api_token
        operator: Handler
        if token is None:
            if self.settings.ingest_allow_anonymous:
                operator = handler
            else:

                async def local_only(request: Request) -> Response:
                    if not is_loopback_host(self.client(request)):
                        raise SignatureError(401, "Authorization: Bearer <token> is required beyond loopback")
                    return await handler(request)

                operator = local_only
        else:
            operator = bearer(token.get_secret_value(), handler)

        async def checked(request: Request) -> Response:
            key = client_key(request.headers.get("authorization", ""))
            if key is None:
                request.state.caller = OPERATOR
                return await operator(request)
            try:
                request.state.caller = await self.tenancy.caller(key, "ingest")
            except KeyRefused as error:
                raise SignatureError(error.status, str(error)) from None
            return await handler(request)

        return checked

    def client(self, request: Request) -> str:
        """The client's address (``ingest_trusted_proxies`` decides which X-Forwarded-For hop counts)."""
        return client_address(request, self.settings.ingest_trusted_proxies)

    async def submit(self, calls: Sequence[InboundCall]) -> list[Outcome]:
        """:meth:`accept` on the event loop: the intake's steps on ``redis.asyncio`` (worker/dataplane/steps.py),
        so the common request never hops to the thread pool; on a Redis Cluster, in the thread pool."""
        redis = self.loop_redis()
        if redis is None:
            return await run_in_threadpool(self.accept, calls)
        return self._counted(calls, await run_async(redis, self.intake.accept_steps(calls)))

    def loop_redis(self) -> AsyncRedis | None:
        """The event loop's client for a request's steps, or None: run them in the thread pool (a Redis
        Cluster; or the account registry's cached snapshot is due, which the phone rules and the session
        API read with the synchronous client: that request refreshes it in a thread)."""
        return None if self.runtime.accounts.stale() else self.runtime.async_redis()

    def accept(self, calls: Sequence[InboundCall]) -> list[Outcome]:
        """The intake's answer for ``calls``, counted per provider and outcome (worker/ops/metrics.py)."""
        return self._counted(calls, self.intake.accept(calls))

    def _counted(self, calls: Sequence[InboundCall], outcomes: list[Outcome]) -> list[Outcome]:
        self.runtime.metrics.intake((c.provider for c in calls), (_status_reason(o) for o in outcomes))
        return outcomes

    # Counts go to the metrics' buffer (in memory, written every second): no thread hop, no round trip.
    async def count_refused(self, request: Request, reason: str) -> None:
        self.runtime.metrics.intake([_provider_of(request.url.path)], [("rejected", reason)])

    async def count_ignored(self, provider: str) -> None:
        self.runtime.metrics.intake([provider], [("ignored", "")])

    @staticmethod
    def single_answer(outcome: Outcome) -> Response:
        if outcome.status == "rejected":
            return error_response(422, outcome.reason, outcome.errors)
        return json_response(outcome.to_dict())


def bearer_ok(given: str, secrets: Sequence[SecretStr | str]) -> bool:
    """Whether an Authorization header is ``Bearer <secret>`` for one of ``secrets`` (constant time)."""
    return any(
        hmac.compare_digest(
            given.encode(), f"Bearer {s.get_secret_value() if isinstance(s, SecretStr) else s}".encode()
        )
        for s in secrets
    )


def bearer(secret: str, handler: Handler) -> Handler:
    """``handler`` behind ``Authorization: Bearer <secret>`` (401 without it, 403 with another)."""

    async def checked(request: Request) -> Response:
        given = request.headers.get("authorization", "")
        if not given:
            raise SignatureError(401, "Authorization: Bearer <token> is required")
        if not bearer_ok(given, [secret]):
            raise SignatureError(403, "the bearer token is not valid")
        return await handler(request)

    return checked


def as_object(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise InputError.one("body", "object", "must be one JSON object", status=400)
    return doc


def one_result(result: SubmitResult, id_name: str) -> Response:
    """The answer for one submitted event: accepted with its source id (``id_name``), or 422 naming the field."""
    if result.rejected:
        rejection = result.rejected[0]
        return error_response(422, rejection.reason, rejection.errors)
    return json_response({"status": "accepted", id_name: result.accepted[0].source_id})


def error_reason(errors: Sequence[FieldError]) -> str:
    """``field:rule`` of the first error: a bounded label (fields and rules are the code's own words)."""
    return f"{errors[0].field}:{errors[0].rule}" if errors else "invalid"


def _provider_of(path: str) -> str:
    first = path.strip("/").split("/", 1)[0]
    return first if first in ("twilio", "zadarma", "mango") else "generic"


def _status_reason(outcome: Outcome) -> tuple[str, str]:
    if outcome.status == "rejected":
        return "rejected", error_reason(outcome.errors)
    if outcome.status in ("held", "ignored") and outcome.reason:
        return outcome.status, metrics.reason_word(outcome.reason)
    return outcome.status, ""
