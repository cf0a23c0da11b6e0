"""The generic JSON API: calls, offline conversions and chats, one at a time or as NDJSON, and conversions of calls."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingest.core import BodyTooLarge, Handler, IngestCore, as_object, error_reason, json_response, one_result, read_body
from ingest.input import InputError
from ingest.providers import generic
from worker.intake.call_refs import record_conversion
from worker.intake.service import Outcome
from worker.model.inbound import InboundCall
from worker.model.kinds import UploadKind

#: The name of the source's own id in an answer, per kind.
ID_NAMES = {UploadKind.CONVERSIONS: "conversion_id", UploadKind.CHATS: "chat_id"}


class ApiRoutes:
    """``/v1/calls``, ``/v1/conversions``, ``/v1/chats`` (each also ``/bulk``), conversions of calls."""

    def __init__(self, core: IngestCore) -> None:
        self.core = core
        self.settings = core.settings

    # --- Calls -----------------------------------------------------------------------------------
    async def generic_one(self, request: Request) -> Response:
        body = await read_body(request, self.settings.ingest_max_body_bytes)
        call = generic.to_call(generic.parse_json(body), self.settings.phone_region)
        return self.core.single_answer((await self.core.submit([call]))[0])

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
                calls.append((number, generic.to_call(generic.parse_json(line), self.settings.phone_region)))
            except InputError as error:
                report[number] = Outcome("rejected", str(error), tuple(error.errors)).to_dict()
                refused.append(error_reason(error.errors))
        outcomes = self.core.accept([call for _, call in calls]) if calls else []
        for (number, call), outcome in zip(calls, outcomes, strict=True):
            report[number] = {"call_id": call.call_id, **outcome.to_dict()}
        self.core.runtime.metrics.intake(["generic"] * len(refused), [("rejected", r) for r in refused])
        return report

    # --- Offline conversions and chats -----------------------------------------------------------
    def event_one(self, kind: UploadKind) -> Handler:
        """``POST /v1/conversions`` or ``/v1/chats``: one JSON object of ``kind``, through the producer."""

        async def handler(request: Request) -> Response:
            body = await read_body(request, self.settings.ingest_max_body_bytes)
            doc = as_object(generic.parse_json(body))
            result = await run_in_threadpool(self.core.runtime.producer.submit, [doc], kind)
            return one_result(result, ID_NAMES[kind])

        return handler

    def events_bulk(self, kind: UploadKind) -> Handler:
        """``POST /v1/conversions/bulk`` or ``/v1/chats/bulk``: NDJSON of ``kind``, a per-line report."""

        async def handler(request: Request) -> Response:
            body = await read_body(request, self.settings.ingest_max_bulk_bytes)
            return await run_in_threadpool(self._events_bulk, body, kind)

        return handler

    def _events_bulk(self, body: bytes, kind: UploadKind) -> Response:
        id_name = ID_NAMES[kind]
        lines = [(number, line) for number, line in enumerate(body.split(b"\n"), start=1) if line.strip()]
        if not lines:
            raise InputError.one("body", "ndjson", "must hold one JSON object per line; it is empty", status=400)
        if len(lines) > self.settings.ingest_max_bulk_lines:
            raise BodyTooLarge
        report: dict[int, dict[str, Any]] = {}
        docs: list[tuple[int, dict[str, Any]]] = []
        for number, line in lines:
            try:
                docs.append((number, as_object(generic.parse_json(line))))
            except InputError as error:
                report[number] = Outcome("rejected", str(error), tuple(error.errors)).to_dict()
        if docs:
            result = self.core.runtime.producer.submit([doc for _, doc in docs], kind)
            for accepted in result.accepted:
                report[docs[accepted.index][0]] = {id_name: accepted.source_id, "status": "accepted"}
            for rejection in result.rejected:
                report[docs[rejection.index][0]] = Outcome("rejected", rejection.reason, rejection.errors).to_dict()
        items = [{"line": number, **report[number]} for number, _ in lines]
        accepted_count = sum(1 for item in items if item["status"] == "accepted")
        totals = {"accepted": accepted_count, "rejected": len(items) - accepted_count}
        if accepted_count == 0:
            noun = "conversion" if kind is UploadKind.CONVERSIONS else "chat"
            return json_response({"error": f"no line holds a valid {noun}", **totals, "lines": items}, 422)
        return json_response({**totals, "lines": items})

    async def call_conversion(self, request: Request) -> Response:
        body = await read_body(request, self.settings.ingest_max_body_bytes)
        doc = as_object(generic.parse_json(body))
        unknown = sorted(set(doc) - {"Target", "DateTime", "Price", "Currency", "conversion_id"})
        if unknown:
            raise InputError.one(unknown[0], "extra_forbidden", "is not a known field", status=422)
        if "Target" not in doc or "DateTime" not in doc:
            missing = "Target" if "Target" not in doc else "DateTime"
            raise InputError.one(missing, "missing", "is required", status=422)
        provider, call_id = request.path_params["provider"], request.path_params["call_id"]
        result = await run_in_threadpool(
            lambda: record_conversion(
                self.core.runtime,
                provider,
                call_id,
                target=str(doc["Target"]),
                date_time=doc["DateTime"],
                price=doc.get("Price"),
                currency=doc.get("Currency"),
                conversion_id=doc.get("conversion_id"),
            )
        )
        return one_result(result, "conversion_id")

    def routes(self) -> list[Route]:
        g, a = self.core.guard, self.core.api_auth
        return [
            Route("/v1/calls", g(a(self.generic_one)), methods=["POST"]),
            Route("/v1/calls/bulk", g(a(self.generic_bulk)), methods=["POST"]),
            Route("/v1/calls/{provider}/{call_id}/conversions", g(a(self.call_conversion)), methods=["POST"]),
            Route("/v1/conversions", g(a(self.event_one(UploadKind.CONVERSIONS))), methods=["POST"]),
            Route("/v1/conversions/bulk", g(a(self.events_bulk(UploadKind.CONVERSIONS))), methods=["POST"]),
            Route("/v1/chats", g(a(self.event_one(UploadKind.CHATS))), methods=["POST"]),
            Route("/v1/chats/bulk", g(a(self.events_bulk(UploadKind.CHATS))), methods=["POST"]),
        ]
