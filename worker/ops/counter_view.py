"""A counter's figures and uploads (issue 19: ``GET /v1/counters/{id}``, ``/uploads``; the console).

Everything is read from what the pipeline keeps anyway: batch records (through the per-shard indexes,
:func:`worker.ops.overview.batches`), the open buffers and the ingest stream (sampled), the held
stream (read up to ``HELD_SCAN`` entries, a call's counter found through the routing table), the
account registry's token state and the counter's readiness. Nothing is written.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import orjson

from worker.accounts.health import REFUSED_AT_DOOR, paused_tokens, token_rows
from worker.dataplane.ids import fingerprint
from worker.delivery.counter_setup import readiness
from worker.ops.overview import BatchInfo, batches, status
from worker.ops.status import batch_view

if TYPE_CHECKING:
    from worker.runtime import Runtime

HELD_SCAN = 20_000
OPEN_STATES = ("SEALED", "UPLOADING", "UPLOADED")
FINAL = ("PROCESSED", "LINKAGE_FAILURE")


@dataclass(frozen=True, slots=True)
class HeldEntry:
    entry_id: str
    counter_id: int | None
    provider: str
    call_id: str
    reason: str
    held_at_ms: int


def held_calls(rt: Runtime, *, limit: int = HELD_SCAN) -> tuple[list[HeldEntry], bool]:
    """The held stream's oldest ``limit`` entries with the counter each number routes to; exact or not."""
    routes = cast(dict[str, str], rt.redis.hgetall(rt.keys.routing))
    counters: dict[str, int] = {}
    for number, raw in routes.items():
        try:
            counters[number] = int(orjson.loads(raw)["counter_id"])
        except (ValueError, KeyError, TypeError):
            continue
    entries = cast(list[tuple[str, dict[str, str]]], rt.redis.xrange(rt.keys.held, count=limit))
    found = []
    for entry_id, fields in entries:
        try:
            call = orjson.loads(fields["call"])
        except (KeyError, ValueError):
            continue
        counter = counters.get(str(call.get("tracking_number") or ""))
        at = int(fields.get("at") or entry_id.split("-", 1)[0])
        found.append(
            HeldEntry(entry_id, counter, str(call.get("provider")), str(call.get("call_id")), fields["reason"], at)
        )
    return found, len(entries) < limit


def token_state(rt: Runtime, counter_id: int) -> dict[str, Any]:
    """The counter's token as the registry and the quota gate see it: never the token itself."""
    token = rt.accounts.token_for(counter_id, removed_ok=True)
    snap = rt.accounts.snapshot()
    owner = snap.unreadable_counters.get(counter_id)
    if token is None and owner is not None:
        return {"state": "unreadable", "account": owner, "detail": snap.unreadable[owner].reason}
    if token is None:
        return {"state": "missing"}
    fp = fingerprint(token)
    # The Yandex login (the registry's, else the one learned for an environment token), or null:
    # never the quota key ``login.<login>`` nor a fingerprint in its place.
    login = rt.accounts.known_login(token) or cast(str | None, rt.redis.hget(rt.keys.token_logins, fp))
    out: dict[str, Any] = {"fingerprint": fp, "login": login, "account": None}
    owner = rt.accounts.owner_id(counter_id)
    out["account"] = owner
    row = next((r for r in token_rows(rt.redis, rt.keys) if r.fingerprint == fp), None)
    out["expires_at"] = row.expires_at if row else None
    paused = paused_tokens(rt.redis, rt.keys)
    if fp in paused:
        out["state"], out["detail"] = "refused", paused[fp]
    elif row and row.check == "refused":
        out["state"], out["detail"] = "refused", REFUSED_AT_DOOR
    elif row and row.expires_at is not None and row.expires_at <= time.time():
        out["state"] = "expired"
    elif row and row.expires_at is not None and row.expires_at - time.time() < rt.settings.token_warning_days * 86_400:
        out["state"] = "near_expiry"
    else:
        out["state"] = "ok"
    return out


def batch_figures(mine: list[BatchInfo]) -> dict[str, Any]:
    states: Tally[str] = Tally()
    rows: Tally[str] = Tally()
    refused = 0
    oldest = 0
    for info in mine:
        states[info.state] += 1
        n = int(info.record.get("rows") or 0)
        rows[info.state] += n
        refused += int(info.record.get("rejected_lines") or 0)
        if info.state in ("SEALED", "UPLOADING"):
            sealed = int(info.record.get("sealed_at") or 0)
            oldest = min(oldest, sealed) if oldest else sealed
    final = states["PROCESSED"] + states["LINKAGE_FAILURE"]
    return {
        "batches": dict(sorted(states.items())),
        "rows_by_state": dict(sorted(rows.items())),
        "calls_uploaded": rows["UPLOADED"] + rows["PROCESSED"] + rows["LINKAGE_FAILURE"],
        "calls_in_batches": sum(n for state, n in rows.items() if state != "REPLAYED"),  # replays: counted once
        "rows_refused": refused,
        "open_uploads": states["UPLOADED"],
        "failure_rate": round(states["LINKAGE_FAILURE"] / final, 4) if final else 0.0,
        "oldest_sealed_ms": oldest,
    }


def counter_figures(rt: Runtime, counter_id: int, *, infos: list[BatchInfo] | None = None) -> dict[str, Any]:
    """The counter's day at a glance (JSON-ready)."""
    infos = batches(rt) if infos is None else infos
    mine = [b for b in infos if b.counter_id == counter_id]
    glance = status(rt, only={counter_id})[0]
    held, held_exact = held_calls(rt)
    held_mine = [h for h in held if h.counter_id == counter_id]
    figures = batch_figures(mine)
    oldest = figures.pop("oldest_sealed_ms")
    waiting = _oldest_unsealed(rt, counter_id)
    oldest = min(x for x in (oldest, waiting) if x) if (oldest or waiting) else 0
    ready = readiness(rt, [counter_id]).get(counter_id)
    return {
        "counter_id": counter_id,
        "known": bool(mine or glance.pending_calls or rt.accounts.counter(counter_id) or held_mine),
        "calls_waiting": glance.pending_calls,
        "calls_waiting_exact": glance.pending_exact,
        "calls_accepted": glance.pending_calls + figures["calls_in_batches"],
        "calls_held": len(held_mine),
        "calls_held_exact": held_exact,
        "held_reasons": dict(Tally(h.reason for h in held_mine)),
        **figures,
        "quarantined": glance.quarantined,
        "oldest_waiting_ms": oldest,
        "oldest_waiting_seconds": round(time.time() - oldest / 1000, 1) if oldest else None,
        "quota_left": glance.quota_left,
        "quota_left_for_uploads": glance.quota_left_for_uploads,
        "token": token_state(rt, counter_id),
        "readiness": None if ready is None else {"ready": ready.ready, "problems": ready.problems()},
    }


def _oldest_unsealed(rt: Runtime, counter_id: int) -> int:
    """When the counter's oldest call not yet in a batch arrived (buffer opened, or stream entry), ms."""
    shard = rt.keys.shard_of(counter_id)
    age_ms = int(rt.settings.flush_max_age * 1000)
    oldest = 0
    for bucket, due in cast(list[tuple[str, float]], rt.redis.zrange(rt.keys.due(shard), 0, -1, withscores=True)):
        if bucket.startswith(f"{counter_id}:"):
            opened = int(due) - age_ms
            oldest = min(oldest, opened) if oldest else opened
    for entry_id, fields in cast(list[tuple[str, dict[str, str]]], rt.redis.xrange(rt.keys.stream(shard), count=1000)):
        if fields.get("b", "").startswith(f"{counter_id}:"):
            at = int(entry_id.split("-", 1)[0])
            return min(oldest, at) if oldest else at
    return oldest


def counter_uploads(
    rt: Runtime, counter_id: int, *, page: int = 1, per_page: int = 50, kind: str | None = None
) -> dict[str, Any]:
    """The counter's batches (with their uploads), newest first, one page."""
    mine = [b for b in batches(rt) if b.counter_id == counter_id and (kind is None or b.kind == kind)]
    mine.sort(key=lambda b: (b.when_ms, b.batch_id), reverse=True)
    start = (page - 1) * per_page
    items = [batch_view(rt, b.batch_id) for b in mine[start : start + per_page]]
    return {
        "counter_id": counter_id,
        "page": page,
        "per_page": per_page,
        "total": len(mine),
        "uploads": [i for i in items if i is not None],
    }
