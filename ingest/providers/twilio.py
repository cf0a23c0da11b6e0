"""Twilio voice status callbacks and ``<Dial action>`` requests.

Only final statuses become calls: ``completed`` is answered; ``busy``, ``no-answer``, ``canceled``
and ``failed`` are missed. Earlier statuses (``ringing``, ``in-progress``, ...), callbacks arriving
out of order after the final one, and child legs (``ParentCallSid``) are answered and ignored; a
repeated final callback carries the same ``CallSid`` and is dropped downstream.

On a ``<Dial action>`` request (``DialCallStatus``) the forwarded leg decides: the caller talked to
someone only if the dialled party answered. When both a Dial action and the status callback reach
the service, the Dial action arrives first and wins; the later callback repeats the ``CallSid``.

Durations: ``TalkDuration`` is ``CallDuration`` (or ``DialCallDuration``) of an answered call, 0 of
a missed one. Twilio reports no hold/wait time: ``HoldDuration`` is left out. ``DateTime`` is the
callback's ``Timestamp`` minus the duration (the time of the request when Twilio sent none).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ingest.input import InputError, required, rfc2822_time, seconds
from ingest.providers.config import ProviderConfig
from worker.model.inbound import InboundCall, extract_identifiers, normalize_number

FINAL_STATUSES = {"completed": True, "busy": False, "no-answer": False, "canceled": False, "failed": False}
DIAL_ANSWERED = {"completed", "answered"}
DIAL_FINAL = DIAL_ANSWERED | {"busy", "no-answer", "canceled", "failed"}
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def to_call(form: Mapping[str, str], config: ProviderConfig) -> InboundCall | str:
    """The call a callback reports, or why it reports none (a reason string)."""
    call_sid = required(form, "CallSid")
    if form.get("ParentCallSid"):
        return "child leg (ParentCallSid): its parent is the call"
    dial_status = form.get("DialCallStatus", "").strip()
    if dial_status:
        if dial_status not in DIAL_FINAL:
            return f"DialCallStatus {dial_status[:32]!r} is not final"
        answered = dial_status in DIAL_ANSWERED
        duration = seconds(form, "DialCallDuration", default=0) or 0
    else:
        status = required(form, "CallStatus")
        if status not in FINAL_STATUSES:
            if status in {"queued", "initiated", "ringing", "in-progress"}:
                return f"CallStatus {status} is not final"
            raise InputError.one("CallStatus", "status", "must be a Twilio call status, as completed or no-answer")
        answered = FINAL_STATUSES[status]
        duration = seconds(form, "CallDuration", default=0) or 0
    stamp = form.get("Timestamp", "").strip()
    ended = rfc2822_time(stamp, "Timestamp") if stamp else int(time.time())
    inbound = form.get("Direction", "inbound").strip() in ("inbound", "")
    ours, theirs = (form.get("To", ""), form.get("From", "")) if inbound else (form.get("From", ""), form.get("To", ""))
    ids, note = extract_identifiers(form, config.id_fields)
    return InboundCall(
        provider="twilio",
        call_id=call_sid,
        started_at=max(0, ended - duration),
        answered=answered,
        tracking_number=normalize_number(ours, config.phone_region),
        caller=normalize_number(theirs, config.phone_region),
        direction="in" if inbound else "out",
        talk=duration if answered else 0,
        call_tracker_url=config.tracker_url(call_sid),
        ids=ids,
        note=note,
    )
