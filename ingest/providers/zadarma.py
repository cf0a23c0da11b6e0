"""Zadarma webhook notifications: ``NOTIFY_END`` (incoming) and ``NOTIFY_OUT_END`` (outgoing).

``NOTIFY_OUT_END`` becomes a call only where the routing entry of the number enables outgoing
calls (:mod:`worker.intake.service`). Other events are answered and ignored. Zadarma gives one ``duration``
and no talk/wait split: an answered call's ``TalkDuration`` is ``duration``, a missed call's is 0,
and ``HoldDuration`` is left out. ``call_start`` has no zone: ``CALLTRACK_ZADARMA_TIMEZONE``.
No link to a call exists in Zadarma's cabinet; set a CallTrackerURL template to add one.

Zadarma signs only ``caller_id``, ``called_did`` (or ``internal``, ``destination``) and
``call_start``: every other field of a notification can be changed by whoever replays a captured
signature. So the call id (the dedup key) is a digest of the account, the event and the exact
signed string, never taken from ``pbx_call_id``. The signed fields are joined without a separator,
so the same signature also covers the same characters split differently between caller and number:
the id is made from the joined string, not from the fields, so such a re-split is the same call.
Visitor ids never come from the form: a Zadarma call is attributed
through the number pools (the lease that covered its start) or held. A replay with changed unsigned
fields is the same call and is dropped as a repeat.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from ingest.input import local_time, required, seconds
from ingest.providers.config import ProviderConfig
from ingest.signatures import zadarma_signed_text
from worker.model.inbound import InboundCall, normalize_number

CALL_EVENTS = {"NOTIFY_END": "in", "NOTIFY_OUT_END": "out"}


def signed_call_id(account: str, form: Mapping[str, str]) -> str:
    """The call id of a notification: a digest of its account, event kind and the exact signed string.

    Before issue 22 the digest was of the signed fields each apart (``zs`` ids); a notification
    stored then and sent again after the upgrade gets the new ``zx`` id, once.
    """
    signed = "\x1f".join([account, form.get("event", ""), zadarma_signed_text(form) or ""])
    return "zx" + hashlib.blake2b(signed.encode(), digest_size=12).hexdigest()


def to_call(form: Mapping[str, str], config: ProviderConfig, account: str) -> InboundCall | str:
    event = required(form, "event")
    direction = CALL_EVENTS.get(event)
    if direction is None:
        return f"event {event[:32]!r} is not a finished call"
    call_id = signed_call_id(account, form)
    started = local_time(required(form, "call_start"), "call_start", config.zone)
    answered = form.get("disposition", "").strip() == "answered"
    duration = seconds(form, "duration", default=0) or 0
    if direction == "in":
        ours, theirs = form.get("called_did", ""), form.get("caller_id", "")
    else:
        ours, theirs = form.get("caller_id", ""), form.get("destination", "")
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
    )
