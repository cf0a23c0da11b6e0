"""The fixed sets metric label values come from (issue 22).

Every label value written to ``{m}:counters`` is one field of that hash and a Prometheus series, kept
forever: a value an outsider can choose is memory they can fill. Before this module an unknown JSON
key of a bulk line became a ``calls_rejected`` reason (``<key>:extra_forbidden``): one request of
20,000 lines added 20,000 series. Now :func:`bounded` maps every label to a value of a fixed set, and
anything else to :data:`OTHER`:

* ``provider``: the adapters' names;
* ``reason``: the code's reason words, or ``<field>:<rule>`` where the field is a field (or alias) of
  the event models or an input name of an adapter, and the rule one of pydantic's error types or
  the code's own rules; either part outside its set is ``other``;
* ``counter_id``: digits only (a served counter: refused rows are counted after Metrica took the file);
* ``error_type``, ``status``: Metrica's documented error types and upload statuses;
* every other label (``kind``, ``how``, ``outcome``, ``endpoint``, ``result``): the code's own words
  for it, :data:`CODE_WORDS` (upload kinds from their enum).

A new reason, rule or input field named by the code must be added here, or it is counted as ``other``.
"""

from __future__ import annotations

import dataclasses
import typing

from pydantic import BaseModel
from pydantic_core.core_schema import ErrorType

from worker.delivery.metrica import RESULTS as METRICA_RESULTS
from worker.model.calls import CallEvent
from worker.model.chats import ChatEvent
from worker.model.conversions import ConversionEvent
from worker.model.inbound import InboundCall
from worker.model.kinds import UploadKind

OTHER = "other"

PROVIDERS = frozenset({"twilio", "zadarma", "mango", "generic", "asterisk", "api"})

# Reasons that are one word: held and refused calls (worker/intake/held.py, ingest/core.py) and the
# session API's fallbacks (worker/intake/pools.py).
REASONS = frozenset(
    {
        "unknown_number", "no_identifier", "too_old", "no_lease", "invalid", "unspecified",
        "too_large", "too_slow", "signature", "held_full", "store_failed",
        "exhausted", "address_limit", "network_limit", "nopool", "rate_address", "rate_counter",
        "foreign_number", "foreign_counter", "held_full_account",
    }
)  # fmt: skip

# Names the adapters and readers give a refused input (ingest/providers/*, ingest/input.py, routing CSV).
INPUT_FIELDS = frozenset(
    {
        "body", "event", "line", "header", "row", "number", "call", "json", "json.call_direction",
        "json.end_time", "json.entry_id", "answer", "end", "billsec", "zd_echo", "CallStatus", "CallSid",
        "CallDuration", "DialCallDuration", "call_start", "duration", "call_id", "to", "from", "start",
        "answered", "talk_duration", "hold_duration", "direction", "counter_id",
        "ClientId|UserId|Yclid", "ClientId|UserId|Yclid|PurchaseId",
    }
)  # fmt: skip

# Rules the code names itself (besides pydantic's error types).
CODE_RULES = frozenset(
    {
        "control_character", "identifier_required", "conversion_identifier_required", "chat_partner_required",
        "phone_number", "in_past", "not_in_future", "join_window", "digits", "one_line", "columns", "unique",
        "known_call", "type", "required", "order", "status", "direction", "form", "json", "ndjson", "object",
        "not_served", "not_owned", "positive_integer",
    }
)  # fmt: skip

METRICA_ERROR_TYPES = frozenset(
    {
        "none", "invalid_uploading", "invalid_parameter", "missing_parameter", "limit_exceeded", "unauthorized",
        "invalid_token", "access_denied", "not_found", "conflict", "quota_requests_by_ip",
        "quota_parallel_requests", "quota_requests_by_uid", "quota_requests_by_counter_id", "backend_error",
        "timeout", "bad_answer",
    }
)  # fmt: skip
UPLOAD_STATUSES = frozenset({"PREPARED", "UPLOADED", "EXPORTED", "MATCHED", "PROCESSED", "LINKAGE_FAILURE"})

_KINDS = frozenset(kind.value for kind in UploadKind)
# The code's own words for the other labels, per label.
CODE_WORDS: dict[str, frozenset[str]] = {
    "kind": _KINDS | {"missing_at_metrica"},
    "how": frozenset({"posted", "adopted"}),
    # worker.delivery.uploader.UploadOutcome's values (tests/test_metric_labels.py keeps them in step;
    # importing the uploader here would be a cycle through the runtime), and the task's own two.
    "outcome": frozenset({"posted", "adopted", "nothing_to_do", "quarantined", "paused", "stale", "parked", "retry"}),
    "endpoint": frozenset(f"{step}_{kind}" for step in ("upload", "status", "list") for kind in _KINDS)
    | {"counter", "counter_options", "goals"},
    # Metrica requests' results, and webhook deliveries' (worker/notify/send.py, WebhookError.result).
    "result": METRICA_RESULTS | {"delivered", "failed", "deadline", "refused", "paused"},
}


def _model_names(model: type[BaseModel]) -> set[str]:
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
        choices = getattr(info.validation_alias, "choices", None) or ()
        names.update(choice for choice in choices if isinstance(choice, str))
    return names


MODEL_FIELDS = frozenset(
    set().union(*(_model_names(m) for m in (CallEvent, ConversionEvent, ChatEvent)))
    | {f.name for f in dataclasses.fields(InboundCall)}
)
FIELDS = MODEL_FIELDS | INPUT_FIELDS
RULES = frozenset(typing.get_args(ErrorType)) | CODE_RULES


def reason(value: str) -> str:
    """A reason label: a known word, or ``field:rule`` with each part known; else ``other``."""
    if value in REASONS:
        return value
    field, colon, rule = value.partition(":")
    if not colon:
        return OTHER
    return f"{field if field in FIELDS else OTHER}:{rule if rule in RULES else OTHER}"


def bounded(name: str, value: str) -> str:
    """The value of label ``name`` from its fixed set; anything else is ``other``."""
    if name == "reason":
        return reason(value)
    if name == "provider":
        return value if value in PROVIDERS else OTHER
    if name == "counter_id":
        return value if value.isdigit() and len(value) <= 19 else OTHER
    if name == "error_type":
        return value if value in METRICA_ERROR_TYPES else OTHER
    if name == "status":
        return value if value in UPLOAD_STATUSES else OTHER
    return value if value in CODE_WORDS.get(name, frozenset()) else OTHER
