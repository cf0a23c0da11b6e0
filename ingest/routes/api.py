"""The generic JSON API: calls, offline conversions and chats, one at a time or as NDJSON, and conversions of calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingest import bulk
from ingest.core import Handler, IngestCore, as_object, error_reason, json_response, one_result
from ingest.edge import BodyTooLarge, ndjson_lines, read_body
from ingest.input import InputError
from ingest.providers import generic
from ingest.served import ServedCounters
from ingest.tenancy import Caller, caller_of, counter_of, not_owned
from worker.intake.call_refs import record_conversion
from worker.intake.ownership import tenant
from worker.model.inbound import InboundCall
from worker.model.kinds import UploadKind

BULK_CHUNK = 1000  # most lines parsed and stored per step of a bulk request
BULK_CHUNK_BYTES = 1024 * 1024  # most bytes of lines per step
ChunkHandler = Callable[[list[tuple[int, bytes]]], list[bulk.Outcome]]
#: The name of the source's own id in an answer, per kind.
ID_NAMES = {UploadKind.CONVERSIONS: "conversion_id", UploadKind.CHATS: "chat_id"}


class ApiRoutes:
    """``/v1/calls``, ``/v1/conversions``, ``/v1/chats`` (each also ``/bulk``), conversions of calls."""

    def __init__(self, core: IngestCore) -> None:
        self.core = core
        self.settings = core.settings
        self.counters = ServedCounters(core.runtime, core.intake.routing)

    # --- Calls -----------------------------------------------------------------------------------
    async def generic_one(self, request: Request) -> Response:
        body = await read_body(request, self.settings.ingest_max_body_bytes)
        call = generic.to_call(generic.parse_json(body), self.settings.phone_region)
        caller = caller_of(request)
        if not caller.operator and not all(await run_in_threadpool(self._calls_owned, caller, [call])):
            raise not_owned()
        return self.core.single_answer((await self.core.submit([owned_by(call, caller)]))[0])

    async def generic_bulk(self, request: Request) -> Response:
        caller = caller_of(request)
        statuses = ("accepted", "held", "ignored", "rejected")
        return await self._stream(request, lambda lines: self._call_chunk(lines, caller), statuses, "call")

    def _calls_owned(self, caller: Caller, calls: list[InboundCall]) -> list[bool]:
        """For a client key: whether each call's tracking number routes to one of its client's counters
        (a number routed nowhere is no client's: its call would be held, so it is refused)."""
        routes = self.core.intake.routing.lookup(call.tracking_number for call in calls)
        counters = {n: r.counter_id for n, r in routes.items() if r is not None}
        owned = self.core.tenancy.owned(caller, counters.values())
        return [counters.get(call.tracking_number or "") in owned for call in calls]

    def _call_chunk(self, lines: list[tuple[int, bytes]], caller: Caller) -> list[bulk.Outcome]:
        """Parse and store one chunk of lines; the outcome of each."""
        report: list[bulk.Outcome] = []
        calls: list[tuple[int, InboundCall]] = []
        refused: list[str] = []
        for number, line in lines:
            try:
                calls.append((number, generic.to_call(generic.parse_json(line), self.settings.phone_region)))
            except InputError as error:
                report.append(bulk.rejected(number, str(error), error.errors))
                refused.append(error_reason(error.errors))
        if calls and not caller.operator:
            mine = self._calls_owned(caller, [call for _, call in calls])
            for (number, _), ok in zip(calls, mine, strict=True):
                if not ok:
                    refusal = not_owned()
                    report.append(bulk.rejected(number, str(refusal), refusal.errors))
                    refused.append(error_reason(refusal.errors))
            calls = [item for item, ok in zip(calls, mine, strict=True) if ok]
        outcomes = self.core.accept([owned_by(call, caller) for _, call in calls]) if calls else []
        for (number, call), outcome in zip(calls, outcomes, strict=True):
            report.append((number, outcome.status, {"call_id": call.call_id, **outcome.to_dict()}))
        if refused:
            self.core.runtime.metrics.intake(["generic"] * len(refused), [("rejected", r) for r in refused])
        return report

    async def _stream(self, request: Request, handle: ChunkHandler, statuses: tuple[str, ...], what: str) -> Response:
        """NDJSON parsed as it streams: each chunk of lines is stored before the next is read, so memory
        holds one chunk and the report. A limit crossed mid-way answers 413 naming how many lines were
        handled (stored lines are kept; sending them again is harmless: repeats are dropped)."""
        s = self.settings
        report = bulk.BulkReport()
        chunk: list[tuple[int, bytes]] = []
        size = 0
        lines = ndjson_lines(
            request,
            max_bytes=s.ingest_max_bulk_bytes,
            max_line=s.ingest_max_line_bytes,
            max_lines=s.ingest_max_bulk_lines,
        )
        try:
            async for item in lines:
                chunk.append(item)
                size += len(item[1])
                if len(chunk) >= BULK_CHUNK or size >= BULK_CHUNK_BYTES:
                    report.add(await run_in_threadpool(handle, chunk))
                    chunk, size = [], 0
        except BodyTooLarge as error:
            if not report.items:
                raise
            await self.core.count_refused(request, "too_large")
            note = "lines up to handled_lines were taken; send the rest again (repeats are dropped)"
            return json_response({"error": str(error), "handled_lines": report.last_line, "note": note}, 413)
        if chunk:
            report.add(await run_in_threadpool(handle, chunk))
        if not report.items:
            raise InputError.one("body", "ndjson", "must hold one JSON object per line; it is empty", status=400)
        head: dict[str, object] = {status: report.totals[status] for status in statuses}
        status_code = 200
        if report.totals["rejected"] == len(report.items):
            head = {"error": f"no line holds a valid {what}", **head}
            status_code = 422
        return Response(report.render(head), status_code=status_code, media_type="application/json")

    # --- Offline conversions and chats -----------------------------------------------------------
    def event_one(self, kind: UploadKind) -> Handler:
        """``POST /v1/conversions`` or ``/v1/chats``: one JSON object of ``kind``, through the producer."""

        async def handler(request: Request) -> Response:
            body = await read_body(request, self.settings.ingest_max_body_bytes)
            doc = as_object(generic.parse_json(body))
            refusals = await run_in_threadpool(self._check_counters, [doc], caller_of(request))
            if refusals[0] is not None:
                raise refusals[0]
            result = await run_in_threadpool(self.core.runtime.producer.submit, [doc], kind)
            return one_result(result, ID_NAMES[kind])

        return handler

    def events_bulk(self, kind: UploadKind) -> Handler:
        """``POST /v1/conversions/bulk`` or ``/v1/chats/bulk``: NDJSON of ``kind``, a per-line report."""
        noun = "conversion" if kind is UploadKind.CONVERSIONS else "chat"

        async def handler(request: Request) -> Response:
            caller = caller_of(request)
            return await self._stream(
                request, lambda lines: self._event_chunk(lines, kind, caller), ("accepted", "rejected"), noun
            )

        return handler

    def _event_chunk(self, lines: list[tuple[int, bytes]], kind: UploadKind, caller: Caller) -> list[bulk.Outcome]:
        report: list[bulk.Outcome] = []
        parsed: list[tuple[int, dict[str, Any]]] = []
        for number, line in lines:
            try:
                parsed.append((number, as_object(generic.parse_json(line))))
            except InputError as error:
                report.append(bulk.rejected(number, str(error), error.errors))
        refusals = self._check_counters([doc for _, doc in parsed], caller)
        docs: list[tuple[int, dict[str, Any]]] = []
        for (number, doc), refusal in zip(parsed, refusals, strict=True):
            if refusal is None:
                docs.append((number, doc))
            else:
                report.append(bulk.rejected(number, str(refusal), refusal.errors))
        if docs:
            result = self.core.runtime.producer.submit([doc for _, doc in docs], kind)
            for accepted in result.accepted:
                item = {ID_NAMES[kind]: accepted.source_id, "status": "accepted"}
                report.append((docs[accepted.index][0], "accepted", item))
            for rejection in result.rejected:
                report.append(bulk.rejected(docs[rejection.index][0], rejection.reason, rejection.errors))
        return report

    def _check_counters(self, docs: list[dict[str, Any]], caller: Caller) -> list[InputError | None]:
        """Each document's refusal, or None. ``counter_id`` is normalised first (a number or digits,
        :func:`ingest.tenancy.counter_of`); then a client key's documents must name one of its client's
        counters (403), the operator's one this deployment serves (each counter costs an upload of the
        login's budget). A document without ``counter_id`` is left to the model (which refuses it)."""
        counters: list[int | InputError | None] = []
        for doc in docs:
            try:
                counters.append(counter_of(doc))
            except InputError as error:
                counters.append(error)
        if caller.operator:
            allowed, refusal = self.counters.served(), not_served
        else:
            allowed = frozenset(self.core.tenancy.owned(caller, (c for c in counters if isinstance(c, int))))
            refusal = not_owned
        return [
            c if isinstance(c, InputError) else (refusal() if c is not None and c not in allowed else None)
            for c in counters
        ]

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
        caller = caller_of(request)
        result = await run_in_threadpool(
            lambda: record_conversion(
                self.core.runtime,
                provider,
                call_id,
                allowed=None if caller.operator else lambda counter: self.core.tenancy.owns(caller, counter),
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


def owned_by(call: InboundCall, caller: Caller) -> InboundCall:
    """The call as its sender's (issue 22): a client key's held calls count against its client's share
    (``held_max_calls_per_account``) and replay only to its counters; the operator's stay the operator's."""
    return call if caller.operator else replace(call, owner=tenant(caller.account))


def not_served() -> InputError:
    return InputError.one(
        "counter_id",
        "not_served",
        "is not a counter this deployment serves (routing table or CALLTRACK_INGEST_COUNTERS)",
    )
