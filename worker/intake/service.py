"""From provider calls to the pipeline: route, compute FirstTimeCaller, submit or hold.

:meth:`Intake.accept` takes normalised :class:`InboundCall`s (from the HTTP service, the AMI client,
the CDR importer) and answers one :class:`Outcome` per call, once Redis holds every call that was
kept. Round trips per batch: one ``HMGET`` for routes (fewer with the cache), two for the lease
history when calls went to dynamic numbers, one for the producer (which also records the caller
history and decides FirstTimeCaller), one for held calls. :meth:`Intake.replay` sends held calls
again after the routing table or the identifiers were fixed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import ValidationError
from redis.exceptions import RedisError

from worker.dataplane.steps import Steps, blocking, run_sync
from worker.delivery.fastrows import FastCheck, Prepared
from worker.delivery.producer import Producer
from worker.errors import ForeignCallError, ProducerError
from worker.intake.callers import CallerCall, CallerHistory
from worker.intake.held import NO_IDENTIFIER, NO_LEASE, TOO_OLD, UNKNOWN_NUMBER, HeldCall, HeldCalls
from worker.intake.ownership import FOREIGN_NUMBER, CounterOwners, foreign_message, reaches
from worker.intake.pools import NumberPools
from worker.intake.routing import Route, RoutingTable
from worker.model.calls import CallEvent, FieldError, TimePolicy, check_time, field_errors
from worker.model.inbound import ID_COLUMNS, InboundCall

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)
Status = Literal["accepted", "held", "ignored", "rejected"]
_PLACEHOLDER_ID = "1"
FOREIGN_HELD_MESSAGE = "routes to a counter of another client account than the credential that brought the call"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one call: stored for upload, held (with the reason), ignored, or rejected."""

    status: Status
    reason: str = ""
    errors: tuple[FieldError, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status}
        if self.reason:
            data["reason"] = self.reason
        if self.errors:
            data["errors"] = [{"field": e.field, "rule": e.rule, "message": e.message} for e in self.errors]
        return data


@dataclass(slots=True)
class _Work:
    index: int
    call: InboundCall
    route: Route | None = None
    event: CallEvent | Prepared | None = None  # the checked row (or, off the fused path, the model)
    has_id: bool = False
    attributed: bool = False  # a dynamic number's session was found for the call's time


@dataclass(slots=True)
class ReplayReport:
    """What a replay did, per held entry id."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    dropped_late: int = 0  # too_old entries released (a late call is never re-held)

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes.values() if o.status == status)


class Intake:
    """Routes calls and hands them to the producer or the held stream."""

    def __init__(
        self,
        routing: RoutingTable,
        callers: CallerHistory,
        held: HeldCalls,
        producer: Producer,
        policy: TimePolicy,
        pools: NumberPools | None = None,
        *,
        owners: CounterOwners | None = None,
        label_as_tag: bool = True,
        late_calls: Literal["hold", "static", "drop"] = "hold",
    ) -> None:
        self.late_calls = late_calls
        self.pools = pools
        self.owners = owners
        self.label_as_tag = label_as_tag
        self.routing = routing
        self.callers = callers
        self.held = held
        self.producer = producer
        self.policy = policy

    def accept(self, calls: Sequence[InboundCall], *, now: datetime | None = None) -> list[Outcome]:
        """One outcome per call, in order. Raises ``ProducerError`` if Redis refused; then resend all.

        Raises ``ForeignCallError`` before anything is stored or held when a call's credential may not
        reach the counter its tracking number routes to (``InboundCall.owner``, worker/intake/ownership.py).
        """
        return run_sync(self.producer.redis, self.accept_steps(calls, now=now))

    def accept_steps(self, calls: Sequence[InboundCall], *, now: datetime | None = None) -> Steps[list[Outcome]]:
        """:meth:`accept` as steps (worker/dataplane/steps.py): the ingestion service runs them on its
        event loop with ``redis.asyncio``; a route or owner cache miss, a lease lookup or a held write
        goes to the thread pool."""
        outcomes, to_hold = yield from self._process(calls, now=now, refuse_foreign=True)
        if to_hold:
            try:
                yield from blocking(lambda: self.held.hold([(calls[i], reason) for i, reason in to_hold]))
            except RedisError as error:
                raise ProducerError(f"Redis did not take the held calls: {type(error).__name__}") from None
        return outcomes

    def replay(self, entries: Sequence[HeldCall], *, ids: Mapping[str, str] | None = None) -> ReplayReport:
        """Send held calls again; delete each entry only once the producer took its call.

        ``ids`` (ClientId/UserId/Yclid) are added to every call first, for an operator who learned
        the visitor of a call. An entry that is still not uploadable stays, with its reason brought
        up to date; a rejected one stays as it was. A call held for a client's credential is routed
        only to that client's counters: to another's, it is rejected (``foreign_number``) and stays.
        A call now older than the join window is dropped (``ignored``, reason ``too_old``), never re-held.
        """
        calls = [entry.call.with_ids(ids) if ids else entry.call for entry in entries]
        outcomes, to_hold = run_sync(self.producer.redis, self._process(calls))
        # A late call only gets later: replay drops it (released, counted), never re-holds it.
        late = {i for i, reason in to_hold if reason == TOO_OLD}
        for i in late:
            outcomes[i] = Outcome("ignored", f"{TOO_OLD}: dropped, older than the join window")
        to_hold = [(i, reason) for i, reason in to_hold if i not in late]
        report = ReplayReport(
            {entry.entry_id: outcome for entry, outcome in zip(entries, outcomes, strict=True)}, len(late)
        )
        done = [e.entry_id for e, o in zip(entries, outcomes, strict=True) if o.status in ("accepted", "ignored")]
        changed = [
            (entries[i], calls[i], reason)
            for i, reason in to_hold
            if reason != entries[i].reason or calls[i] != entries[i].call
        ]
        try:
            self.held.rehold(changed)
            self.held.release(done)
        except RedisError as error:
            raise ProducerError(f"Redis did not update the held calls: {type(error).__name__}") from None
        log.info(
            "held_replayed", accepted=report.count("accepted"), held=report.count("held"), dropped_too_old=len(late)
        )
        return report

    def drop_held(
        self, *, reason: str | None = None, counter: int | None = None, older_than_days: float | None = None
    ) -> list[HeldCall]:
        """Delete held calls matching every filter (reason's first word, routed counter, age); the ones removed."""

        def counter_of(numbers: set[str]) -> dict[str, str]:
            routes = self.routing.lookup(numbers)  # one HMGET for every number
            return {number: str(route.counter_id) for number, route in routes.items() if route is not None}

        older_than_ms = None
        if older_than_days is not None:
            older_than_ms = int((datetime.now(UTC).timestamp() - older_than_days * 86_400) * 1000)
        try:
            return self.held.drop(
                reason=reason,
                counter=None if counter is None else str(counter),
                counter_of=counter_of,
                older_than_ms=older_than_ms,
            )
        except RedisError as error:
            raise ProducerError(f"Redis did not delete the held calls: {type(error).__name__}") from None

    # --- Steps -----------------------------------------------------------------------------------
    def _process(
        self, calls: Sequence[InboundCall], *, now: datetime | None = None, refuse_foreign: bool = False
    ) -> Steps[tuple[list[Outcome], list[tuple[int, str]]]]:
        now = now or datetime.now(UTC)
        outcomes: list[Outcome | None] = [None] * len(calls)
        to_hold: list[tuple[int, str]] = []
        numbers = [call.tracking_number for call in calls]
        try:
            routes = self.routing.cached(numbers)
            if routes is None:  # a miss: the round trip on the synchronous client (a thread, on the loop path)
                routes = yield from blocking(lambda: self.routing.lookup(numbers))
            foreign = yield from self._foreign(calls, routes)
        except RedisError as error:
            raise ProducerError(f"Redis did not answer the routing lookup: {type(error).__name__}") from None
        if foreign and refuse_foreign:
            number = calls[min(foreign)].tracking_number
            raise ForeignCallError(foreign_message("tracking number", number), reason=FOREIGN_NUMBER)
        calls, attributed = yield from self._attribute(calls, routes)
        fast = FastCheck(now, self.policy, self.producer.regions)
        work: list[_Work] = []
        for index, call in enumerate(calls):
            route = routes.get(call.tracking_number) if call.tracking_number else None
            if index in foreign:
                refusal = FieldError("tracking_number", FOREIGN_NUMBER, FOREIGN_HELD_MESSAGE)
                outcomes[index] = Outcome("rejected", str(refusal), (refusal,))
                continue
            if route is not None and call.direction == "out" and not route.outgoing:
                outcomes[index] = Outcome("ignored", "outgoing calls are not enabled for this number")
                continue
            item = _Work(index, call, route, attributed=index in attributed)
            errors = self._validate(item, now, fast)
            if errors and all(e.rule == "join_window" for e in errors) and self.late_calls != "static":
                # Never a 4xx for a late call (providers do not retry those): held or dropped, visibly.
                if self.late_calls == "drop":
                    outcomes[index] = Outcome("ignored", f"{TOO_OLD}: {errors[0]}")
                else:
                    outcomes[index] = Outcome("held", TOO_OLD)
                    to_hold.append((index, TOO_OLD))
                continue
            if errors:
                outcomes[index] = Outcome("rejected", "; ".join(str(e) for e in errors), tuple(errors))
                continue
            if route is None:
                outcomes[index] = Outcome("held", UNKNOWN_NUMBER)
                to_hold.append((index, UNKNOWN_NUMBER))
                continue
            work.append(item)

        ready: list[_Work] = []
        for item in work:
            if not item.has_id:
                dynamic = item.route is not None and item.route.kind == "dynamic"
                reason = NO_LEASE if dynamic else NO_IDENTIFIER
                reason += f" ({item.call.note})" if item.call.note else ""
                outcomes[item.index] = Outcome("held", reason)
                to_hold.append((item.index, reason))
            else:
                ready.append(item)
        events = [item.event for item in ready if item.event is not None]
        # FirstTimeCaller comes from the caller history (decided as each call is stored), whatever
        # the provider sent; calls without a caller number, or outgoing ones, carry none.
        marks: list[tuple[str, str] | None] = [
            self._caller_mark(item) if item.call.caller and item.call.direction == "in" else None for item in ready
        ]
        for i, event in enumerate(events):
            if marks[i] is None and isinstance(event, Prepared) and event.first_caller is not None:
                events[i] = replace(event, first_caller=None)
            elif marks[i] is None and isinstance(event, CallEvent) and event.first_time_caller is not None:
                events[i] = event.model_copy(update={"first_time_caller": None})
        result = yield from self.producer.submit_steps(events, callers=marks)
        for rejection in result.rejected:  # only the clock can move between our check and submit's
            outcomes[ready[rejection.index].index] = Outcome("rejected", rejection.reason, rejection.errors)
        for accepted in result.accepted:
            outcomes[ready[accepted.index].index] = Outcome("accepted")
        return [o or Outcome("rejected", "not processed") for o in outcomes], to_hold

    def _foreign(self, calls: Sequence[InboundCall], routes: Mapping[str, Route | None]) -> Steps[set[int]]:
        """Indexes of calls whose credential's owner may not reach their routed counter (one HMGET)."""
        asks = [
            (index, route.counter_id)
            for index, call in enumerate(calls)
            if call.owner is not None
            and call.tracking_number
            and (route := routes.get(call.tracking_number)) is not None
        ]
        if not asks:
            return set()
        # Without an owner lookup every counter counts as the deployment's: a client's call reaches none.
        tenants: Mapping[int, str | None] = {}
        if self.owners is not None:
            owners, counters = self.owners, [counter for _, counter in asks]
            cached = owners.cached(counters)
            tenants = cached if cached is not None else (yield from blocking(lambda: owners.lookup(counters)))
        return {index for index, counter in asks if not reaches(calls[index].owner, tenants.get(counter))}

    def _caller_mark(self, item: _Work) -> tuple[str, str] | None:
        if item.route is None or not item.call.caller:
            return None
        mark = self.callers.mark(CallerCall(item.route.counter_id, item.call.caller, item.call.tracking_key))
        return mark.key, mark.mark

    def _attribute(
        self, calls: Sequence[InboundCall], routes: Mapping[str, Route | None]
    ) -> Steps[tuple[list[InboundCall], set[int]]]:
        """Calls to dynamic numbers take the identifiers and landing URL of the session that held
        the number when the call started (worker/intake/pools.py); returns the calls and which were."""
        result = list(calls)
        asks: list[tuple[int, tuple[int, str, int]]] = []
        for index, call in enumerate(calls):
            route = routes.get(call.tracking_number) if call.tracking_number else None
            if self.pools is not None and route is not None and route.kind == "dynamic" and call.direction == "in":
                asks.append((index, (route.counter_id, route.number, call.started_at)))
        if not asks:
            return result, set()
        try:
            pools = self.pools
            found = yield from blocking(lambda: pools.attribute([ask for _, ask in asks]) if pools else [])
        except RedisError as error:
            raise ProducerError(f"Redis did not answer the lease lookup: {type(error).__name__}") from None
        attributed: set[int] = set()
        for (index, _), attribution in zip(asks, found, strict=True):
            if attribution is None:
                continue
            call = result[index].with_ids(attribution.ids)
            if attribution.url and not call.columns.get("URL"):
                call = replace(call, columns={**call.columns, "URL": attribution.url})
            result[index] = call
            attributed.add(index)
        return result, attributed

    def _validate(self, item: _Work, now: datetime, fast: FastCheck) -> list[FieldError]:
        """The call's columns checked once, as the producer stores them (with a stand-in id when it has
        none): the fused rules give the stored row; anything they are not sure of goes to ``CallEvent``
        and the clock check, which explain a rejection (worker/delivery/rows.py)."""
        call, route = item.call, item.route
        data: dict[str, Any] = {
            **call.columns,
            "counter_id": route.counter_id if route else 1,
            "call_id": call.call_id,
            "provider": call.provider,
            "DateTime": call.started_at,
            "PhoneNumber": call.caller,
            "CallMissed": not call.answered,
            "TalkDuration": call.talk,
            "HoldDuration": call.hold,
            "CallTrackerURL": call.call_tracker_url,
        }
        if route is not None:
            # Dynamic numbers are "dynamic calls" only when a session held the number at the time.
            data["StaticCall"] = not item.attributed
            if route.static_call and route.label and self.label_as_tag and not data.get("Tag"):
                data["Tag"] = route.label
        if self.late_calls == "static" and self.policy.too_old(_start(call), now) is not None:
            data["StaticCall"] = True  # uploaded for Metrica's call reports; never joined to a visit
        ids = {column: call.ids[column] for column in ID_COLUMNS if call.ids.get(column)}
        item.has_id = bool(ids)
        data.update(ids or {"ClientId": _PLACEHOLDER_ID})
        row = fast.call(item.index, data)
        if row is not None:
            item.event = row if item.has_id else None
            return []
        try:
            event = CallEvent.model_validate(data, context=self.producer.regions.context())
        except ValidationError as error:
            return field_errors(error)
        problems = check_time(event, now, self.policy)
        if problems:
            return problems
        item.event = event if item.has_id else None
        return []


def _start(call: InboundCall) -> datetime:
    return datetime.fromtimestamp(call.started_at, UTC)


def build_intake(runtime: Runtime) -> Intake:
    """The intake of one process, on the runtime's shared Redis client and producer."""
    s = runtime.settings
    secret = s.caller_hash_secret.get_secret_value().encode() if s.caller_hash_secret else None
    owners = CounterOwners(runtime.redis, runtime.keys, cache_seconds=s.accounts_cache_seconds)
    return Intake(
        RoutingTable(runtime.redis, runtime.keys, cache_seconds=s.routing_cache_seconds, owners=owners),
        CallerHistory(runtime.redis, runtime.keys, days=s.first_caller_days, secret=secret),
        HeldCalls(
            runtime.redis,
            runtime.keys,
            runtime.scripts.hold,
            runtime.scripts.held_release,
            runtime.scripts.held_recount,
            seen_days=s.dedup_window_days,
            max_calls=s.held_max_calls,
            max_per_account=s.held_max_calls_per_account,
        ),
        runtime.producer,
        runtime.policy,
        NumberPools(runtime),
        owners=owners,
        label_as_tag=s.static_label_as_tag,
        late_calls=s.late_calls,
    )
