"""Mango Office VPBX ``events/summary``: one final summary per call.

Incoming (``call_direction`` 1): the tracking number is ``line_number``, the caller ``from.number``.
Outgoing (2) becomes a call only where the number's routing entry enables outgoing calls; internal
(0) calls are ignored. Answered when ``entry_result`` is 1. Durations are derived (Mango does not
document them): talk = ``end_time`` - ``talk_time``, hold = (``talk_time`` or ``end_time``) -
``create_time``. Identifier fields are dotted paths into the summary's JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ingest.input import InputError, unix_time
from ingest.providers.config import ProviderConfig
from worker.model.inbound import InboundCall, extract_identifiers, normalize_number


def parse_json(text: str) -> dict[str, Any]:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InputError.one("json", "json", "must be a JSON object", status=400) from None
    if not isinstance(data, dict):
        raise InputError.one("json", "json", "must be a JSON object", status=400)
    return data


def _number(data: Mapping[str, Any], side: str, region: str | None) -> str | None:
    node = data.get(side)
    value = node.get("number") if isinstance(node, dict) else None
    return _as_number(value, region)


def _as_number(value: Any, region: str | None) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return normalize_number(str(value), region)


def to_call(data: Mapping[str, Any], config: ProviderConfig) -> InboundCall | str:
    entry_id = data.get("entry_id")
    if not isinstance(entry_id, str) or not entry_id.strip():
        raise InputError.one("json.entry_id", "missing", "is required (a string)")
    direction = data.get("call_direction")
    if direction not in (0, 1, 2, "0", "1", "2"):
        raise InputError.one("json.call_direction", "direction", "must be 0, 1 or 2")
    if int(direction) == 0:
        return "internal call"
    created = unix_time(data.get("create_time"), "json.create_time")
    ended = unix_time(data.get("end_time"), "json.end_time")
    talk_at = unix_time(data.get("talk_time", 0), "json.talk_time")
    if ended < created or (talk_at and not created <= talk_at <= ended):
        raise InputError.one("json.end_time", "order", "must satisfy create_time <= talk_time <= end_time")
    answered = str(data.get("entry_result", "0")) == "1"
    talk = ended - talk_at if answered and talk_at else 0
    hold = (talk_at if talk_at else ended) - created
    inbound = int(direction) == 1
    line = data.get("line_number")
    ids, note = extract_identifiers(data, config.id_fields)
    return InboundCall(
        provider="mango",
        call_id=entry_id.strip(),
        started_at=created,
        answered=answered,
        tracking_number=_as_number(line, config.phone_region),
        caller=_number(data, "from" if inbound else "to", config.phone_region),
        direction="in" if inbound else "out",
        talk=min(talk, 7 * 86_400),
        hold=min(hold, 7 * 86_400),
        call_tracker_url=config.tracker_url(entry_id.strip()),
        ids=ids,
        note=note,
    )
