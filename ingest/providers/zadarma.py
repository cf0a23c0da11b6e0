"""Zadarma webhook notifications: ``NOTIFY_END`` (incoming) and ``NOTIFY_OUT_END`` (outgoing).

``NOTIFY_OUT_END`` becomes a call only where the routing entry of the number enables outgoing
calls (:mod:`worker.intake.service`). Other events are answered and ignored. Zadarma gives one ``duration``
and no talk/wait split: an answered call's ``TalkDuration`` is ``duration``, a missed call's is 0,
and ``HoldDuration`` is left out. ``call_start`` has no zone: ``CALLTRACK_ZADARMA_TIMEZONE``.
No link to a call exists in Zadarma's cabinet; set a CallTrackerURL template to add one.
"""

from __future__ import annotations

from collections.abc import Mapping

from ingest.input import local_time, required, seconds
from ingest.providers.config import ProviderConfig
from worker.model.inbound import InboundCall, extract_identifiers, normalize_number

CALL_EVENTS = {"NOTIFY_END": "in", "NOTIFY_OUT_END": "out"}


def to_call(form: Mapping[str, str], config: ProviderConfig) -> InboundCall | str:
    event = required(form, "event")
    direction = CALL_EVENTS.get(event)
    if direction is None:
        return f"event {event[:32]!r} is not a finished call"
    call_id = required(form, "pbx_call_id")
    started = local_time(required(form, "call_start"), "call_start", config.zone)
    answered = form.get("disposition", "").strip() == "answered"
    duration = seconds(form, "duration", default=0) or 0
    if direction == "in":
        ours, theirs = form.get("called_did", ""), form.get("caller_id", "")
    else:
        ours, theirs = form.get("caller_id", ""), form.get("destination", "")
    ids, note = extract_identifiers(form, config.id_fields)
    return InboundCall(
        provider="zadarma",
        call_id=call_id,
        started_at=started,
        answered=answered,
        tracking_number=normalize_number(ours, config.phone_region),
        caller=normalize_number(theirs, config.phone_region),
        direction="in" if direction == "in" else "out",
        talk=duration if answered else 0,
        call_tracker_url=config.tracker_url(call_id),
        ids=ids,
        note=note,
    )
