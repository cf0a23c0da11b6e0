"""A call that later converts: record an offline conversion for a call by the call's own id.

When drain accepts a call it keeps "counter:<seq>|id column letter|identifier" under a digest
of (provider, call id) for the dedup window, a field of its shard's bucketed dedup hashes
(``lua/drain.lua``, :func:`worker.dataplane.marks.dedup_slot`). A conversion reported for that call ("the call
became a paid order") takes its counter and visitor identifier from there, so the caller needs to
know only the provider's call id.

The same marks are the status API's index (issue 19): ``seq`` is the batch sequence number the
call's buffer reserved when it opened, so the batch holding an accepted call is
``CT<epoch>S<shard>B<seq>R<nonce>`` with no per-batch list of calls; the nonce is kept once per batch
(:func:`batch_tail`). A conversion's or chat's mark holds ":seq". :func:`locate` is the one function
that reads this index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from worker.dataplane.ids import batch_tail as make_tail
from worker.dataplane.marks import dedup_periods, dedup_slot, parse_call_ref
from worker.delivery.producer import SubmitResult, call_ref_digest
from worker.model.fields import FieldError, Rejection
from worker.model.kinds import UploadKind

if TYPE_CHECKING:
    from worker.runtime import Runtime


@dataclass(frozen=True, slots=True)
class CallRef:
    """What a conversion needs of an earlier call."""

    counter_id: int
    id_column: str
    identifier: str
    shard: int = 0
    seq: str | None = None  # the batch's number "<seq>" (or, marks of before, "<seq>R<nonce>"; None before issue 19)


@dataclass(frozen=True, slots=True)
class Mark:
    """Where drain put an accepted event: its shard, the sequence number of its batch, its counter and
    (for a call) its identifier column, which names the buffer it went into."""

    shard: int
    seq: str | None
    counter_id: int = 0
    id_column: str = ""


def parse_ref(value: str, shard: int = 0) -> CallRef:
    """A ref value: ``counter[:<seq>]|column|identifier`` (the identifier may itself hold ``|``)."""
    head, rest = value.split("|", 1)
    counter, _, seq = head.partition(":")
    counter_id, column, identifier = parse_call_ref(f"{counter}|{rest}")
    return CallRef(counter_id, column, identifier, shard, seq or None)


def find_call(rt: Runtime, provider: str, call_id: str) -> CallRef | None:
    """The call's counter and identifier, if it was accepted within the dedup window.

    Two round trips: the time and each shard's period sizes, then the call's field in every period
    of the window on every shard (and the one-key ref of before issue 18).
    """
    digest = call_ref_digest(provider, call_id)
    pipe = rt.redis.pipeline(transaction=False)
    pipe.time()
    for shard in range(rt.keys.shards):
        pipe.hgetall(rt.keys.dedup_sizes(shard))
    now, *tables = pipe.execute()
    periods = _window(rt, now)
    pipe = rt.redis.pipeline(transaction=False)
    owners: list[int] = []  # the shard of each lookup, in order
    for shard, table in enumerate(tables):
        sizes = {_text(k): int(v) for k, v in table.items()}
        for period in periods:
            if str(period) in sizes:
                bucket, field = dedup_slot(digest, sizes[str(period)])
                pipe.hget(rt.keys.dedup_hash(shard, period, bucket), field)
                owners.append(shard)
        pipe.get(rt.keys.call_ref(shard, digest))
        owners.append(shard)
    for shard, value in zip(owners, pipe.execute(), strict=True):
        if value:
            return parse_ref(_text(value), shard)
    return None


def _window(rt: Runtime, now: tuple[int, int]) -> list[int]:
    """The dedup periods of the window at Redis's ``TIME`` reply ``now``, newest first."""
    s = rt.settings
    return dedup_periods(int(now[0]) * 1000 + int(now[1]) // 1000, s.dedup_window_days * 86_400, s.dedup_period_days)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _dedup_value(rt: Runtime, shard: int, digest: str) -> str | None:
    """The value drain keeps under a conversion's or chat's dedup digest (":<seq>")."""
    pipe = rt.redis.pipeline(transaction=False)
    pipe.time()
    pipe.hgetall(rt.keys.dedup_sizes(shard))
    now, table = pipe.execute()
    periods = _window(rt, now)
    sizes = {_text(k): int(v) for k, v in table.items()}
    pipe = rt.redis.pipeline(transaction=False)
    for period in periods:
        if str(period) in sizes:
            bucket, field = dedup_slot(digest, sizes[str(period)])
            pipe.hget(rt.keys.dedup_hash(shard, period, bucket), field)
    pipe.get(rt.keys.dedup_mark(shard, digest))  # the one-key mark of before issue 18
    return next((_text(v) for v in pipe.execute() if v is not None), None)


def batch_tail(rt: Runtime, shard: int, seq: str | None) -> str | None:
    """A mark's batch number as the batch id's tail ``<seq>R<nonce>``: marks name a batch by number
    alone and drain keeps each batch's nonce once, in ``<p>:bn:<period>`` (marks of before issue 18's
    compaction carry the nonce themselves). None when no nonce is kept for it (expired)."""
    if seq is None or "R" in seq:
        return seq
    pipe = rt.redis.pipeline(transaction=False)
    for period in _window(rt, rt.redis.time()):
        pipe.hget(rt.keys.batch_nonces(shard, period), seq)
    nonce = next((_text(v) for v in pipe.execute() if v is not None), None)
    return None if nonce is None else make_tail(seq, nonce)


def locate(rt: Runtime, *, provider: str = "", call_id: str = "", counter_id: int = 0, dedup: str = "") -> Mark | None:
    """The index of the status API: where drain put a call (by provider and call id) or another event
    (by its counter and dedup digest); None when no mark exists (not drained yet, or expired)."""
    if call_id:
        ref = find_call(rt, provider, call_id)
        if ref is None:
            return None
        return Mark(ref.shard, batch_tail(rt, ref.shard, ref.seq), ref.counter_id, ref.id_column)
    shard = rt.keys.shard_of(counter_id)
    value = _dedup_value(rt, shard, dedup)
    if value is None:
        return None
    # ":<seq>" (the counter is the digest's already); "counter:<seq>R<nonce>" before the compaction,
    # "" or "1" before issue 19.
    _, colon, seq = value.partition(":")
    return Mark(shard, batch_tail(rt, shard, seq) if colon and seq else None, counter_id)


def record_conversion(
    rt: Runtime,
    provider: str,
    call_id: str,
    *,
    target: str,
    date_time: datetime | int | str,
    price: Decimal | str | float | None = None,
    currency: str | None = None,
    conversion_id: str | None = None,
    allowed: Callable[[int], bool] | None = None,
) -> SubmitResult:
    """Submit a conversion for an earlier call; a rejection names the field when the call is unknown.

    ``allowed`` (a client API key's ownership test, issue 22): a call of any other counter is answered
    as unknown, so a client learns nothing of another client's calls.
    """
    ref = find_call(rt, provider, call_id)
    if ref is None or (allowed is not None and not allowed(ref.counter_id)):
        days = rt.settings.dedup_window_days
        error = FieldError("call_id", "known_call", f"is not a call accepted from {provider!r} in the last {days} days")
        return SubmitResult(rejected=[Rejection(0, (error,))])
    event: dict[str, Any] = {
        "counter_id": ref.counter_id,
        "conversion_id": conversion_id or f"{provider}.{call_id}.{target}"[:128],
        "source": "call",
        ref.id_column: ref.identifier,
        "Target": target,
        "DateTime": date_time,
    }
    if price is not None:
        event["Price"] = price
    if currency is not None:
        event["Currency"] = currency
    return rt.producer.submit([event], kind=UploadKind.CONVERSIONS)
