"""The generic JSON API: calls and offline conversions, one at a time or as NDJSON, and conversions of calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingest.core import IngestCore, as_object, error_reason, json_response, one_result
from ingest.edge import BodyTooLarge, ndjson_lines, read_body
from ingest.input import InputError
from ingest.providers import generic
from ingest.served import ServedCounters
from worker.intake.call_refs import record_conversion
from worker.model.fields import FieldError
from worker.model.inbound import InboundCall
from worker.model.kinds import UploadKind

BULK_CHUNK = 1000  # lines parsed and stored per step of a bulk request
ChunkHandler = Callable[[list[tuple[int, bytes]]], list[tuple[int, str, bytes]]]


def _rejected(number: int, reason: str, errors: Sequence[FieldError]) -> tuple[int, str, bytes]:
    item = {"line": number, "status": "rejected", "reason": reason,
            "errors": [{"field": e.field, "rule": e.rule, "message": e.message} for e in errors]}  # fmt: skip
    return number, "rejected", orjson.dumps(item)


class ApiRoutes:
    """``/v1/calls``, ``/v1/calls/bulk``, ``/v1/conversions``, ``/v1/conversions/bulk``, conversions of calls."""

    def __init__(self, core: IngestCore) -> None:
        self.core = core
        self.settings = core.settings
        self.counters = ServedCounters(core.runtime, core.intake.routing)

    # --- Calls -----------------------------------------------------------------------------------
    async def generic_one(self, request: Request) -> Response:
        body = await read_body(request, self.settings.ingest_max_body_bytes)
        call = generic.to_call(generic.parse_json(body))
        return self.core.single_answer((await self.core.submit([call]))[0])

    async def generic_bulk(self, request: Request) -> Response:
        return await self._stream(request, self._call_chunk, ("accepted", "held", "ignored", "rejected"), "call")

    def _call_chunk(self, lines: list[tuple[int, bytes]]) -> list[tuple[int, str, bytes]]:
        """Parse and store one chunk of lines; (line, status, report item as JSON) each."""
        report: list[tuple[int, str, bytes]] = []
        calls: list[tuple[int, InboundCall]] = []
        refused: list[str] = []
        for number, line in lines:
            try:
                calls.append((number, generic.to_call(generic.parse_json(line))))
            except InputError as error:
                report.append(_rejected(number, str(error), error.errors))
                refused.append(error_reason(error.errors))
        outcomes = self.core.accept([call for _, call in calls]) if calls else []
        for (number, call), outcome in zip(calls, outcomes, strict=True):
            item = {"line": number, "call_id": call.call_id, **outcome.to_dict()}
            report.append((number, outcome.status, orjson.dumps(item)))
        report.sort(key=lambda entry: entry[0])
        if refused:
            self.core.runtime.metrics.intake(["generic"] * len(refused), [("rejected", r) for r in refused])
        return report

    async def _stream(self, request: Request, handle: ChunkHandler, statuses: tuple[str, ...], what: str) -> Response:
        """NDJSON parsed as it streams: each chunk of lines is stored before the next is read, so memory
        holds one chunk and the report. A limit crossed mid-way answers 413 naming how many lines were
        handled (stored lines are kept; sending them again is harmless: repeats are dropped)."""
        s = self.settings
        report: list[tuple[int, str, bytes]] = []
        chunk: list[tuple[int, bytes]] = []
        lines = ndjson_lines(
            request,
            max_bytes=s.ingest_max_bulk_bytes,
            max_line=s.ingest_max_line_bytes,
            max_lines=s.ingest_max_bulk_lines,
        )
        try:
            async for item in lines:
                chunk.append(item)
                if len(chunk) >= BULK_CHUNK:
                    report += await run_in_threadpool(handle, chunk)
                    chunk = []
        except BodyTooLarge as error:
            if not report:
                raise
            await self.core.count_refused(request, "too_large")
            body = {"error": str(error), "handled_lines": report[-1][0], "note": "lines up to handled_lines were taken"}
            return json_response(body, 413)
        if chunk:
            report += await run_in_threadpool(handle, chunk)
        if not report:
            raise InputError.one("body", "ndjson", "must hold one JSON object per line; it is empty", status=400)
        totals = dict.fromkeys(statuses, 0)
        for _, status, _ in report:
            totals[status] += 1
        head: dict[str, object] = {**totals}
        status_code = 200
        if totals["rejected"] == len(report):
            head = {"error": f"no line holds a valid {what}", **totals}
            status_code = 422
        content = orjson.dumps(head)[:-1] + b',"lines":[' + b",".join(item for _, _, item in report) + b"]}"
        return Response(content, status_code=status_code, media_type="application/json")

    # --- Offline conversions ---------------------------------------------------------------------
    async def conversion_one(self, request: Request) -> Response:
        body = await read_body(request, self.settings.ingest_max_body_bytes)
        doc = as_object(generic.parse_json(body))
        await run_in_threadpool(self._check_counters, [doc])
        result = await run_in_threadpool(self.core.runtime.producer.submit, [doc], UploadKind.CONVERSIONS)
        return one_result(result)

    async def conversions_bulk(self, request: Request) -> Response:
        return await self._stream(request, self._conversion_chunk, ("accepted", "rejected"), "conversion")

    def _conversion_chunk(self, lines: list[tuple[int, bytes]]) -> list[tuple[int, str, bytes]]:
        report: list[tuple[int, str, bytes]] = []
        docs: list[tuple[int, dict[str, Any]]] = []
        for number, line in lines:
            try:
                doc = as_object(generic.parse_json(line))
                self._check_counters([doc])
                docs.append((number, doc))
            except InputError as error:
                report.append(_rejected(number, str(error), error.errors))
        if docs:
            result = self.core.runtime.producer.submit([doc for _, doc in docs], UploadKind.CONVERSIONS)
            for accepted in result.accepted:
                number = docs[accepted.index][0]
                item = {"line": number, "conversion_id": accepted.source_id, "status": "accepted"}
                report.append((number, "accepted", orjson.dumps(item)))
            for rejection in result.rejected:
                report.append(_rejected(docs[rejection.index][0], rejection.reason, rejection.errors))
        report.sort(key=lambda item: item[0])
        return report

    def _check_counters(self, docs: list[dict[str, Any]]) -> None:
        """Conversions only for counters this deployment serves (each one costs an upload of the login's budget)."""
        served = self.counters.served()
        for doc in docs:
            counter = doc.get("counter_id")
            if isinstance(counter, int) and not isinstance(counter, bool) and counter not in served:
                raise InputError.one(
                    "counter_id",
                    "not_served",
                    "is not a counter this deployment serves (routing table or CALLTRACK_INGEST_COUNTERS)",
                )

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
        return one_result(result)

    def routes(self) -> list[Route]:
        g, a = self.core.guard, self.core.api_auth
        return [
            Route("/v1/calls", g(a(self.generic_one)), methods=["POST"]),
            Route("/v1/calls/bulk", g(a(self.generic_bulk)), methods=["POST"]),
            Route("/v1/calls/{provider}/{call_id}/conversions", g(a(self.call_conversion)), methods=["POST"]),
            Route("/v1/conversions", g(a(self.conversion_one)), methods=["POST"]),
            Route("/v1/conversions/bulk", g(a(self.conversions_bulk)), methods=["POST"]),
        ]
