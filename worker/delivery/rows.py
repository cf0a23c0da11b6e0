"""Events to stored rows, one pass per chunk (issue 26): validation, ``to_row`` and CSV encoding fused.

:func:`prepare` turns a submission into :class:`Prepared` rows (the stored CSV line of
:mod:`worker.delivery.csvfile`, the dedup source, the call ref) and rejections. A call, conversion or
chat given as a plain JSON object of the usual shape goes through the fused rules of
:mod:`worker.delivery.fastrows`; anything they are not sure of (another type, a value a rule refuses,
a value pydantic would strip or convert, a DateTime outside the window) is handed to the model, which
gives the same rows and the very same errors as before; so the fast path never rejects. Model
instances take the model; rows already checked by the same fused rules (:class:`Prepared`, the
intake's calls) are stored as they are. ``tests/test_rows_fastpath.py`` holds both paths to
identical rows and errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from worker.delivery.csvfile import encode_row
from worker.delivery.fastrows import FIRST_CALLER_BIT, FastCheck, Prepared
from worker.model.calls import CallEvent, Rejection, TimePolicy, validate_calls
from worker.model.chats import ChatEvent, validate_chats
from worker.model.conversions import ConversionEvent, validate_conversions
from worker.model.kinds import UploadKind
from worker.model.phones import PhoneRegions

__all__ = ["FIRST_CALLER_BIT", "Event", "Prepared", "from_event", "prepare"]

Event = CallEvent | ConversionEvent | ChatEvent


def from_event(index: int, event: Event) -> Prepared:
    """The model's path: ``to_row`` and ``encode_row``."""
    bucket = event.bucket
    cells = event.to_row()
    first = cells.pop("FirstTimeCaller", None)
    head, _, line = encode_row(bucket.spec, bucket.id_type, cells).partition(",")
    ref = None
    if isinstance(event, CallEvent):
        ref = (event.provider, event.call_id, event.id_type.column, event.identifier)
    return Prepared(
        index, event.source_id, bucket.counter_id, bucket.encode(), event.dedup_source, int(head, 16), line, first, ref
    )


def prepare(
    events: Iterable[Mapping[str, Any] | Event | Prepared],
    kind: UploadKind,
    now: datetime,
    policy: TimePolicy,
    regions: PhoneRegions,
) -> tuple[list[Prepared], list[Rejection]]:
    """Accepted events as stored rows (in input order) and the rejections (in input order)."""
    prepared: list[Prepared] = []
    slow: list[Any] = []
    slow_index: list[int] = []
    checks = FastCheck(now, policy, regions)
    fused = {UploadKind.CALLS: checks.call, UploadKind.CONVERSIONS: checks.conversion, UploadKind.CHATS: checks.chat}
    check = fused[kind]
    for index, raw in enumerate(events):
        if type(raw) is Prepared:  # checked by the caller (the intake's fused check): stored as it is
            prepared.append(raw if raw.index == index else replace(raw, index=index))
            continue
        fast = check(index, raw) if type(raw) is dict else None
        if fast is None:
            slow.append(raw)
            slow_index.append(index)
        else:
            prepared.append(fast)
    if not slow:
        return prepared, []
    accepted, rejected = _validate(kind, slow, now, policy, regions)
    prepared += [from_event(slow_index[position], event) for position, event in accepted]
    if len(prepared) > len(accepted):
        prepared.sort(key=lambda item: item.index)
    return prepared, [Rejection(slow_index[r.index], r.errors) for r in rejected]


def _validate(
    kind: UploadKind, events: list[Any], now: datetime, policy: TimePolicy, regions: PhoneRegions
) -> tuple[list[tuple[int, Event]], list[Rejection]]:
    """The models' path: pydantic's validation and the clock checks."""
    accepted: list[tuple[int, Event]] = []
    if kind is UploadKind.CALLS:
        calls, rejected = validate_calls(events, now, policy, regions)
        accepted.extend(calls)
    elif kind is UploadKind.CHATS:
        chats, rejected = validate_chats(events, now, policy, regions)
        accepted.extend(chats)
    else:
        conversions, rejected = validate_conversions(events, now, policy)
        accepted.extend(conversions)
    return accepted, rejected
