"""The webhook outbox: which events exist, which wait, which were delivered, which are dead.

Nothing in the upload path writes here. A periodic sweep (``calltrack.notify_sweep``, :func:`sweep`)
reads what the pipeline recorded anyway: batches that reached ``PROCESSED`` / ``LINKAGE_FAILURE``
(the ``done`` index) or ``QUARANTINED`` (the ``quarantine`` index) and new entries of the held
stream, each from a cursor. For a counter whose account has a webhook it records an event once
(``lua/notify_add.lua``; the id ``final:<batch>:<status>`` or ``held:<entry id>`` is the idempotency
key) and sends ``calltrack.notify_webhook`` with the event id only. A crash anywhere costs at most a
second look: the cursor (a (score, member) position, ``worker/notify/cursor.py``: any number of
batches with one time are read page after page) moves after the events are recorded, and an event already waiting,
delivered or dead is not recorded twice. A sent message that is lost is sent again once its
``pending`` time has passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import orjson
import structlog

from worker.model.kinds import Bucket
from worker.notify import cursor
from worker.notify.cursor import OVERLAP_MS

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)
FINAL_STATES = ("PROCESSED", "LINKAGE_FAILURE", "QUARANTINED")
SWEEP_LIMIT = 5_000
GRACE_SECONDS = 600.0  # a sent event is sent again if nothing settled it this long after it was due


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str  # "upload.final" or "call.held"
    account: str
    created_ms: int
    data: dict[str, Any]

    def to_json(self) -> bytes:
        doc = {"id": self.id, "type": self.type, "account": self.account, "created_ms": self.created_ms}
        return orjson.dumps({**doc, "data": self.data})

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        doc = orjson.loads(raw)
        return cls(doc["id"], doc["type"], doc["account"], int(doc["created_ms"]), doc["data"])


def _now_ms() -> int:
    return int(time.time() * 1000)


def _keys(rt: Runtime) -> list[str]:
    return [rt.keys.notify(n) for n in ("outbox", "pending", "sent", "dead")]


def record(rt: Runtime, event: Event) -> bool:
    """Record the event unless it is known; True when it is new."""
    return bool(rt.scripts.notify_add(keys=_keys(rt), args=[event.id, event.to_json()]))


def _webhook_accounts(rt: Runtime) -> dict[int, str]:
    """Counter -> account id, for the accounts that have a webhook."""
    snap = rt.accounts.snapshot()
    return {c: a.id for c, (a, _) in snap.by_counter.items() if a.webhook_url}


def _sweep_batches(rt: Runtime, owners: dict[int, str], index: str, zset: Callable[[int], str]) -> int:
    recorded = 0
    cursor_key = rt.keys.notify("cursor")
    for shard in range(rt.keys.shards):
        field = f"{index}:{shard}"
        now = _now_ms()
        since = cursor.parse(cast(str | None, rt.redis.hget(cursor_key, field)), now)
        found = cursor.after(rt.redis, zset(shard), since, SWEEP_LIMIT)
        pipe = rt.redis.pipeline(transaction=False)
        for batch_id, _ in found:
            pipe.hgetall(rt.keys.batch(batch_id))
        records = cast(list[dict[str, str]], pipe.execute()) if found else []
        for (batch_id, score), record_ in zip(found, records, strict=True):
            if not record_.get("bucket") or record_.get("state") not in FINAL_STATES:
                continue
            bucket = Bucket.decode(record_["bucket"])
            account = owners.get(bucket.counter_id)
            if account is None:
                continue
            state = record_["state"]
            data = {
                "batch_id": batch_id,
                "counter_id": bucket.counter_id,
                "kind": bucket.kind.value,
                "state": state,
                "status": record_.get("status") or state,
                "upload_id": record_.get("upload_id"),
                "rows": int(record_.get("rows") or 0),
                "rejected_lines": int(record_.get("rejected_lines") or 0),
                "reason": record_.get("reason"),
                "at_ms": int(score),
            }
            event = Event(f"final:{batch_id}:{state}", "upload.final", account, _now_ms(), data)
            recorded += record(rt, event)
        position = cursor.settled(found, since, now)
        if position != since:
            rt.redis.hset(cursor_key, field, cursor.dump(position))
    return recorded


def _sweep_held(rt: Runtime, owners: dict[int, str]) -> int:
    cursor_key = rt.keys.notify("cursor")
    since = cast(str | None, rt.redis.hget(cursor_key, "held"))
    start = f"({since}" if since else f"{_now_ms() - OVERLAP_MS}-0"
    entries = cast(
        list[tuple[str, dict[str, str]]], rt.redis.xrange(rt.keys.held, min=start, max="+", count=SWEEP_LIMIT)
    )
    if not entries:
        return 0
    routes = cast(dict[str, str], rt.redis.hgetall(rt.keys.routing))
    recorded = 0
    for entry_id, fields in entries:
        try:
            call = orjson.loads(fields["call"])
            route = orjson.loads(routes[str(call.get("tracking_number"))])
            counter = int(route["counter_id"])
        except (KeyError, ValueError, TypeError):
            continue  # a number nobody routes: no counter, so no account to tell
        account = owners.get(counter)
        if account is None or fields.get("owner", account) != account:
            continue  # (issue 22) a client's held call is never told to another client the number routes to
        data = {
            "provider": call.get("provider"),
            "call_id": call.get("call_id"),
            "counter_id": counter,
            "reason": fields.get("reason"),
            "held_at_ms": int(fields.get("at") or entry_id.split("-", 1)[0]),
            "started_at": call.get("started_at"),
        }
        recorded += record(rt, Event(f"held:{entry_id}", "call.held", account, _now_ms(), data))
    rt.redis.hset(cursor_key, "held", entries[-1][0])
    return recorded


def sweep(rt: Runtime) -> int:
    """Record new events of accounts with a webhook; the number recorded."""
    owners = _webhook_accounts(rt)
    if not owners:
        rt.redis.delete(rt.keys.notify("cursor"))  # a webhook added later starts from its own time
        return 0
    recorded = _sweep_batches(rt, owners, "done", rt.keys.done)
    recorded += _sweep_batches(rt, owners, "quarantine", rt.keys.quarantine)
    return recorded + _sweep_held(rt, owners)


def due(rt: Runtime, *, resend_after: float, limit: int = 1000) -> list[str]:
    """Events to send now (never sent, or sent and unsettled past their time); each is pushed back by
    ``resend_after`` seconds first, so two sweeps never send one event twice."""
    now = _now_ms()
    pending_key = rt.keys.notify("pending")
    ids = cast(list[str], rt.redis.zrangebyscore(pending_key, "-inf", now, start=0, num=limit))
    if ids:
        rt.redis.zadd(pending_key, {i: now + int(resend_after * 1000) for i in ids})
    return ids


def postpone(rt: Runtime, event_id: str, seconds: float) -> None:
    """A retry is scheduled in ``seconds``: the sweep leaves the event alone until well after it."""
    rt.redis.zadd(rt.keys.notify("pending"), {event_id: _now_ms() + int((seconds + GRACE_SECONDS) * 1000)}, xx=True)


def defer(rt: Runtime, event_id: str, until_ms: int) -> None:
    """The account's breaker is open: the sweep sends the event again once it may be tried (``until_ms``)."""
    rt.redis.zadd(rt.keys.notify("pending"), {event_id: until_ms}, xx=True)


def wake(rt: Runtime, account: str) -> int:
    """Make every waiting event of ``account`` due now (its breaker was closed by hand); how many."""
    ids = [i for i, raw in cast(dict[str, str], rt.redis.hgetall(rt.keys.notify("outbox"))).items()
           if Event.from_json(raw).account == account]  # fmt: skip
    if ids:
        rt.redis.zadd(rt.keys.notify("pending"), dict.fromkeys(ids, 0), xx=True)
    return len(ids)


def load(rt: Runtime, event_id: str) -> Event | None:
    raw = rt.redis.hget(rt.keys.notify("outbox"), event_id)
    return None if raw is None else Event.from_json(cast(str, raw))


def delivered(rt: Runtime, event_id: str) -> None:
    now = _now_ms()
    pipe = rt.redis.pipeline(transaction=True)
    pipe.zadd(rt.keys.notify("sent"), {event_id: now})
    pipe.hdel(rt.keys.notify("outbox"), event_id)
    pipe.zrem(rt.keys.notify("pending"), event_id)
    pipe.zremrangebyscore(rt.keys.notify("sent"), "-inf", now - rt.settings.dedup_window_days * 86_400_000)
    pipe.execute()


def drop(rt: Runtime, event_id: str) -> None:
    """An event nobody can receive any more (its account's webhook was removed)."""
    pipe = rt.redis.pipeline(transaction=True)
    pipe.hdel(rt.keys.notify("outbox"), event_id)
    pipe.zrem(rt.keys.notify("pending"), event_id)
    pipe.execute()


def dead(rt: Runtime, event: Event, error: str, attempts: int) -> None:
    """Retries ran out: keep the event with the last error, visible until retried or cleared."""
    doc = {"event": orjson.loads(event.to_json()), "error": error[:500], "at_ms": _now_ms(), "attempts": attempts}
    pipe = rt.redis.pipeline(transaction=True)
    pipe.hset(rt.keys.notify("dead"), event.id, orjson.dumps(doc))
    pipe.hdel(rt.keys.notify("outbox"), event.id)
    pipe.zrem(rt.keys.notify("pending"), event.id)
    pipe.execute()
    log.error("webhook_dead", event_id=event.id, account=event.account, attempts=attempts, error=error[:200])


def dead_letters(rt: Runtime) -> list[dict[str, Any]]:
    found = [orjson.loads(v) for v in cast(dict[str, str], rt.redis.hgetall(rt.keys.notify("dead"))).values()]
    return sorted(found, key=lambda d: int(d.get("at_ms", 0)))


def retry_dead(rt: Runtime, event_ids: list[str] | None = None) -> int:
    """Put dead events back in the outbox (all when ``event_ids`` is None); the sweep sends them."""
    dead_key = rt.keys.notify("dead")
    stored = cast(dict[str, str], rt.redis.hgetall(dead_key))
    moved = 0
    for event_id in stored if event_ids is None else event_ids:
        if event_id not in stored:
            continue
        event = Event.from_json(orjson.dumps(orjson.loads(stored[event_id])["event"]))
        rt.redis.hdel(dead_key, event_id)
        moved += record(rt, event)
    return moved


def counts(rt: Runtime) -> dict[str, int]:
    pipe = rt.redis.pipeline(transaction=False)
    pipe.hlen(rt.keys.notify("outbox"))
    pipe.hlen(rt.keys.notify("dead"))
    pipe.zcard(rt.keys.notify("sent"))
    waiting, dead_, sent = pipe.execute()
    return {"waiting": int(waiting), "dead": int(dead_), "delivered": int(sent)}
