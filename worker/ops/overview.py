"""What operators look at: per-counter status and a counter's upload history, read from Redis.

Batches are found through the per-shard indexes (``sealed``, ``uploaded``, ``quarantine`` in full;
``done``, the history, by its newest ``HISTORY_SCAN`` entries per shard), with one pipelined
``HGETALL`` per index page, so a status costs a few round trips whatever the traffic.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import orjson

from worker.dataplane.entries import events_in
from worker.dataplane.ids import fingerprint
from worker.delivery.restore_hold import held_shards
from worker.errors import UnknownCounterError
from worker.model.kinds import Bucket
from worker.ops.quotas import quota_view

if TYPE_CHECKING:
    from worker.runtime import Runtime

HISTORY_SCAN = 5_000
STREAM_SAMPLE = 20_000
_RECORD_FIELDS = (
    "state", "bucket", "rows", "sealed_at", "attempts", "failures", "upload_id", "status", "uploaded_at",
    "final_at", "source_quantity", "line_quantity", "rejected_lines", "reason", "quarantined_at", "overdue",
    "replayed_as", "replay_of", "discarded_by", "discard_reason", "last_error", "parked_reason",
)  # fmt: skip


@dataclass(slots=True)
class BatchInfo:
    """One batch record, with its id and counter."""

    batch_id: str
    counter_id: int
    kind: str
    record: dict[str, str]

    @property
    def state(self) -> str:
        return self.record.get("state", "")

    @property
    def when_ms(self) -> int:
        for name in ("final_at", "uploaded_at", "quarantined_at", "sealed_at"):
            if self.record.get(name):
                return int(self.record[name])
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "counter_id": self.counter_id, "kind": self.kind, **self.record}


def batches(rt: Runtime, *, history: int = HISTORY_SCAN) -> list[BatchInfo]:
    """Every open or quarantined batch, and the newest ``history`` final ones per shard."""
    found: list[BatchInfo] = []
    for shard in range(rt.keys.shards):
        pipe = rt.redis.pipeline(transaction=False)
        pipe.zrange(rt.keys.sealed(shard), 0, -1)
        pipe.zrange(rt.keys.uploaded(shard), 0, -1)
        pipe.zrange(rt.keys.quarantine(shard), 0, -1)
        pipe.zrevrange(rt.keys.done(shard), 0, max(history - 1, 0)) if history else pipe.echo("")
        sealed, uploaded, quarantined, done = pipe.execute()
        ids = list(dict.fromkeys([*sealed, *uploaded, *quarantined, *(done or [])]))
        pipe = rt.redis.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hmget(rt.keys.batch(batch_id), list(_RECORD_FIELDS))
        for batch_id, values in zip(ids, pipe.execute(), strict=True):
            record = {k: v for k, v in zip(_RECORD_FIELDS, values, strict=True) if v is not None}
            if not record.get("bucket"):
                continue
            bucket = Bucket.decode(record["bucket"])
            found.append(BatchInfo(batch_id, bucket.counter_id, bucket.kind.value, record))
    return found


def batch(rt: Runtime, batch_id: str) -> BatchInfo | None:
    record = cast(dict[str, str], rt.redis.hgetall(rt.keys.batch(batch_id)))
    if not record.get("bucket"):
        return None
    bucket = Bucket.decode(record["bucket"])
    return BatchInfo(batch_id, bucket.counter_id, bucket.kind.value, record)


@dataclass(slots=True)
class CounterStatus:
    """One counter at a glance."""

    counter_id: int
    pending_calls: int = 0  # in the ingest stream (sampled) and in open buffers
    pending_exact: bool = True
    open_batches: int = 0  # sealed, uploading or uploaded without a final status
    quarantined: int = 0
    last_batch: str = ""
    last_upload_id: str = ""
    last_status: str = ""
    last_upload_at_ms: int = 0
    quota_left: int | None = None
    quota_left_for_uploads: int | None = None
    paused: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # why its sealed batches wait (parked reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "counter_id": self.counter_id,
            "pending_calls": self.pending_calls,
            "pending_exact": self.pending_exact,
            "open_batches": self.open_batches,
            "quarantined": self.quarantined,
            "last_upload": {
                "batch_id": self.last_batch,
                "upload_id": self.last_upload_id,
                "status": self.last_status,
                "uploaded_at_ms": self.last_upload_at_ms,
            }
            if self.last_batch
            else None,
            "quota_left": self.quota_left,
            "quota_left_for_uploads": self.quota_left_for_uploads,
            "paused": self.paused,
            "waiting": self.waiting,
        }


def _pending(rt: Runtime) -> tuple[Tally[int], bool]:
    """Calls per counter not yet in a batch: open buffers (exact) and stream entries (sampled)."""
    counts: Tally[int] = Tally()
    exact = True
    for shard in range(rt.keys.shards):
        buckets = cast(list[str], rt.redis.hkeys(rt.keys.buffer_bytes(shard)))
        pipe = rt.redis.pipeline(transaction=False)
        for bucket in buckets:
            pipe.llen(rt.keys.buffer(shard, bucket))
        for bucket, length in zip(buckets, pipe.execute(), strict=True):
            counts[int(bucket.split(":", 1)[0])] += int(length)
        entries = cast(list[tuple[str, dict[str, str]]], rt.redis.xrange(rt.keys.stream(shard), count=STREAM_SAMPLE))
        exact &= len(entries) < STREAM_SAMPLE
        for _, fields in entries:
            bucket = fields.get("b", "")
            if bucket:
                counts[int(bucket.split(":", 1)[0])] += events_in(fields)
    return counts, exact


def counters_known(rt: Runtime, infos: list[BatchInfo], pending: Tally[int]) -> set[int]:
    """Counters with a token, an account, a routing entry, a batch or pending calls."""
    known = set(rt.settings.metrica_counter_tokens) | {b.counter_id for b in infos} | set(pending)
    known |= set(rt.accounts.snapshot().by_counter)
    for raw in cast(list[str], rt.redis.hvals(rt.keys.routing)):
        try:
            known.add(int(orjson.loads(raw)["counter_id"]))
        except (ValueError, KeyError, TypeError):
            continue
    return known


def status(rt: Runtime, only: set[int] | None = None, *, known_only: bool = False) -> list[CounterStatus]:
    """Every known counter's status, or those of ``only`` (``known_only``: an unknown one raises
    :class:`UnknownCounterError`, else it is shown with zeros)."""
    infos = batches(rt)
    pending, exact = _pending(rt)
    known = counters_known(rt, infos, pending)
    if only and known_only and only - known:
        raise UnknownCounterError(sorted(only - known))
    counters = sorted(only if only else known)
    quotas = {q.login: q for q in quota_view(rt.redis, rt.keys, rt.settings)}
    paused = cast(dict[str, str], rt.redis.hgetall(rt.keys.paused))
    result = {c: CounterStatus(c, pending_calls=pending.get(c, 0), pending_exact=exact) for c in counters}
    for info in infos:
        item = result.get(info.counter_id)
        if item is None:
            continue
        if info.state in ("SEALED", "UPLOADING", "UPLOADED"):
            item.open_batches += 1
        reason = info.record.get("parked_reason")
        if info.state == "SEALED" and reason and reason not in item.waiting:
            item.waiting.append(reason)
        elif info.state == "QUARANTINED":
            item.quarantined += 1
        uploaded_at = int(info.record.get("uploaded_at") or 0)
        if uploaded_at and uploaded_at >= item.last_upload_at_ms:
            item.last_batch = info.batch_id
            item.last_upload_id = info.record.get("upload_id", "")
            item.last_status = info.record.get("status", "")
            item.last_upload_at_ms = uploaded_at
    unreadable = rt.accounts.snapshot().unreadable_counters
    restored = held_shards(rt)
    for item in result.values():
        if item.counter_id in unreadable and "token_unreadable" not in item.waiting:
            item.waiting.append("token_unreadable")  # as this process's key ring sees it
        if rt.keys.shard_of(item.counter_id) in restored and "restore_held" not in item.waiting:
            item.waiting.append("restore_held")  # ctl restore status / confirm
        item.waiting.sort()
        token = rt.accounts.token_for(item.counter_id, removed_ok=True)
        if token is None:
            continue
        quota = quotas.get(rt.accounts.login_of(token))
        if quota is not None:
            item.quota_left = quota.left_today
            item.quota_left_for_uploads = quota.left_for_uploads
        fp = fingerprint(token)  # a 401/403 pauses the token itself
        item.paused = [k for k in paused if k in (fp, f"{fp}:{item.counter_id}")]
    return list(result.values())


def history(rt: Runtime, counter_id: int, *, limit: int = 50, known_only: bool = False) -> list[BatchInfo]:
    """The counter's batches, newest first (``known_only``: an unknown counter raises :class:`UnknownCounterError`)."""
    mine = [b for b in batches(rt) if b.counter_id == counter_id]
    if not mine and known_only and counter_id not in counters_known(rt, [], _pending(rt)[0]):
        raise UnknownCounterError([counter_id])
    return sorted(mine, key=lambda b: (b.when_ms, b.batch_id), reverse=True)[:limit]


def quarantined(rt: Runtime) -> list[BatchInfo]:
    return sorted((b for b in batches(rt, history=0) if b.state == "QUARANTINED"), key=lambda b: b.when_ms)


def age_text(ms: int) -> str:
    if not ms:
        return "-"
    seconds = max(0, int(time.time() - ms / 1000))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"
