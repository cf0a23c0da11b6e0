"""The session API: the site's script asks which tracking number to show a visitor.

``GET /v1/number?counter=101&ClientId=...&URL=...`` (a simple request: no CORS preflight) or
``POST /v1/number`` with the same fields as JSON. The answer holds only the number, when its lease
ends (``expires_at``, and ``seconds`` from now, for a client whose clock is off), whether it is the
counter's fallback, and what the site tag (``routes/tag.py``) swaps on the page: the counter's static
numbers (``replace``) or a CSS ``selector`` from the registry; never another session's data.
``POST /v1/number/release`` with the same fields (JSON, any content type: ``navigator.sendBeacon``)
ends the session's lease soon after the visitor left the page (``NumberPools.release``). Every field is checked
(:class:`worker.intake.pools.Session`); requests are limited per client IP and per counter, and answer 429
with ``Retry-After`` beyond that. CORS follows ``session_allowed_origins``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from config.settings import Settings
from ingest.core import IngestCore
from ingest.edge import BodyTimeout, BodyTooLarge, client_address, network_of, read_body
from ingest.input import InputError
from worker.dataplane.steps import Steps, blocking, run_async, run_sync
from worker.intake.pools import Lease, NumberPools, RateLimited, Session
from worker.model.fields import field_errors

FIELDS = ("counter", "ClientId", "UserId", "Yclid", "URL")
MAX_BODY = 8192  # a POST body: counted while it is read, refused at the first byte over


class SessionService:
    """Handlers of the session API over the process's runtime."""

    def __init__(self, settings: Settings, core: IngestCore) -> None:
        self.settings = settings
        self.core = core
        self.runtime = runtime = core.runtime
        self.pools = NumberPools(runtime)
        self.origins = set(settings.session_allowed_origins)

    def cors(self, request: Request) -> dict[str, str]:
        origin = request.headers.get("origin")
        if "*" in self.origins:
            return {"Access-Control-Allow-Origin": "*"}
        if origin and origin.rstrip("/") in self.origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {"Vary": "Origin"}

    def answer(self, request: Request, data: Any, status: int = 200, extra: dict[str, str] | None = None) -> Response:
        headers = {**self.cors(request), "Cache-Control": "no-store", **(extra or {})}
        return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)

    async def preflight(self, request: Request) -> Response:
        headers = {
            **self.cors(request),
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "86400",
        }
        return Response(status_code=204, headers=headers)

    async def session(self, request: Request) -> Session | Response:
        """The request's session fields, checked; or the answer that refuses them."""
        if request.method == "POST":
            try:
                body = await read_body(request, MAX_BODY)
            except BodyTooLarge as error:
                return self.answer(request, {"error": str(error)}, 413)
            except BodyTimeout as error:
                return self.answer(request, {"error": str(error)}, 408, {"Connection": "close"})
            try:
                raw = orjson.loads(body)
            except orjson.JSONDecodeError:
                raw = None
            if not isinstance(raw, dict):
                return self.answer(request, _errors([("body", "json", "must be one JSON object")]), 400)
        else:
            raw = dict(request.query_params)
        unknown = sorted(set(raw) - set(FIELDS))
        if unknown:
            return self.answer(request, _errors([(unknown[0], "extra_forbidden", "is not a known field")]), 422)
        try:
            session = Session.model_validate(raw)
        except ValidationError as error:
            errors = field_errors(error)
            return self.answer(request, _errors([(e.field, e.rule, e.message) for e in errors]), 422)
        return session

    async def number(self, request: Request) -> Response:
        session = await self.session(request)
        if isinstance(session, Response):
            return session
        client = client_address(request, self.settings.ingest_trusted_proxies)
        steps = self._lease(session, client, network_of(client))
        redis = self.core.loop_redis()
        try:
            if redis is None:
                lease, now_ms, swapped = await run_in_threadpool(run_sync, self.runtime.redis, steps)
            else:
                lease, now_ms, swapped = await run_async(redis, steps)
        except InputError as error:
            return self.answer(request, {"error": str(error)}, error.status, {"Retry-After": "1"})
        expires = (
            datetime.fromtimestamp(lease.expires_at_ms / 1000, UTC).isoformat(timespec="seconds")
            if lease.expires_at_ms
            else None
        )
        seconds = max(0, (lease.expires_at_ms - now_ms) // 1000) if expires else None
        answer = {"number": lease.number, "expires_at": expires, "seconds": seconds, "fallback": lease.fallback}
        return self.answer(request, {**answer, **swapped})

    async def release(self, request: Request) -> Response:
        session = await self.session(request)
        if isinstance(session, Response):
            return session
        client = client_address(request, self.settings.ingest_trusted_proxies)
        try:
            ends = await run_in_threadpool(self._release, session, client)
        except InputError as error:
            return self.answer(request, {"error": str(error)}, error.status, {"Retry-After": "1"})
        return self.answer(request, {"released": bool(ends)})

    def swapped(self, counter_id: int) -> dict[str, Any]:
        """What the site tag replaces: the registry's site numbers or selector, else the fallback number."""
        found = self.runtime.accounts.counter(counter_id)
        counter = found[1] if found else None
        fallback = self.settings.pool_fallback_numbers.get(counter_id)
        numbers = (counter.site_numbers if counter else []) or ([fallback] if fallback else [])
        return {"replace": numbers, "selector": counter.site_selector if counter else None}

    def _release(self, session: Session, client: str) -> int:
        try:
            return self.pools.release(session, client)
        except RateLimited as error:
            raise _rate_error(error) from None

    def _lease(self, session: Session, client: str, network: str) -> Steps[tuple[Lease, int, dict[str, Any]]]:
        """The lease, Redis's clock and what the tag swaps, as steps: on the event loop (``redis.asyncio``)
        unless the registry's snapshot is due (``IngestCore.loop_redis``), so ``swapped`` reads it cached."""
        try:
            lease, now_ms = yield from self.pools.lease_steps(session, client, network)
        except RateLimited as error:
            raise _rate_error(error) from None
        accounts = self.runtime.accounts  # a snapshot due since the request began is read in a thread
        swapped = yield from blocking(lambda: self.swapped(session.counter_id), accounts.stale())
        return lease, now_ms, swapped

    def routes(self) -> list[Route]:
        return [
            Route("/v1/number", self.number, methods=["GET", "POST"]),
            Route("/v1/number", self.preflight, methods=["OPTIONS"]),
            Route("/v1/number/release", self.release, methods=["POST"]),
            Route("/v1/number/release", self.preflight, methods=["OPTIONS"]),
        ]


def _rate_error(error: RateLimited) -> InputError:
    return InputError.one("client" if error.who == "client" else "counter", "rate", str(error), status=429)


def _errors(items: list[tuple[str, str, str]]) -> dict[str, Any]:
    return {
        "error": "; ".join(f"{field}: {message}" for field, _, message in items),
        "errors": [{"field": f, "rule": r, "message": m} for f, r, m in items],
    }
