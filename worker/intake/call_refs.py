"""A call that later converts: record an offline conversion for a call by the call's own id.

When drain accepts a call it keeps "counter|id column letter|identifier" under a digest of (provider,
call id) for the dedup window, a field of its shard's bucketed dedup hashes (``lua/drain.lua``,
:func:`worker.keys.dedup_slot`). A conversion reported for that call ("the call
became a paid order") takes its counter and visitor identifier from there, so the caller needs to
know only the provider's call id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from worker.delivery.producer import SubmitResult, call_ref_digest
from worker.keys import dedup_periods, dedup_slot, parse_call_ref
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


def find_call(rt: Runtime, provider: str, call_id: str) -> CallRef | None:
    """The call's counter and identifier, if it was accepted within the dedup window.

    Two round trips: the time and each shard's period sizes, then the call's field in every period
    of the window on every shard (and the one-key ref of before issue 18).
    """
    digest = call_ref_digest(provider, call_id)
    s = rt.settings
    pipe = rt.redis.pipeline(transaction=False)
    pipe.time()
    for shard in range(rt.keys.shards):
        pipe.hgetall(rt.keys.dedup_sizes(shard))
    now, *tables = pipe.execute()
    periods = dedup_periods(int(now[0]) * 1000 + int(now[1]) // 1000, s.dedup_window_days * 86_400, s.dedup_period_days)
    pipe = rt.redis.pipeline(transaction=False)
    for shard, table in enumerate(tables):
        sizes = {_text(k): int(v) for k, v in table.items()}
        for period in periods:
            if str(period) in sizes:
                bucket, field = dedup_slot(digest, sizes[str(period)])
                pipe.hget(rt.keys.dedup_hash(shard, period, bucket), field)
        pipe.get(rt.keys.call_ref(shard, digest))
    for value in pipe.execute():
        if value:
            return CallRef(*parse_call_ref(_text(value)))
    return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
) -> SubmitResult:
    """Submit a conversion for an earlier call; a rejection names the field when the call is unknown."""
    ref = find_call(rt, provider, call_id)
    if ref is None:
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
