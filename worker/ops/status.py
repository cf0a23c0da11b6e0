"""Where is one call, conversion or chat (issue 19's status API; ``ctl`` and the console use it too).

A call is in exactly one place (ARCHITECTURE.md, "The guarantee"), and this module asks each in turn:

1. its mark (``ref:`` for a call, ``seen:`` for a conversion or chat, read only through
   :func:`worker.intake.call_refs.locate`) names the batch sequence number its buffer reserved, so
   the batch is ``CT<epoch>S<shard>B<seq>R<nonce>``: no record yet and the bucket's open buffer still holds
   that number means *buffered*; a record gives its state (followed through ``replayed_as``);
2. no mark: the shard's ingest stream is searched (the newest ``STREAM_SCAN`` entries): *stream*;
3. a call only: the held stream (``{held}:seen:`` says it was held; the entry gives the reason);
4. none of these: unknown (the API answers 404).

A few round trips per lookup, whatever the traffic; nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import orjson

from worker.dataplane.entries import holds_digest
from worker.dataplane.ids import batch_id as make_batch_id
from worker.delivery.producer import call_ref_digest, dedup_digest
from worker.intake.call_refs import locate
from worker.intake.routing import Route
from worker.model.kinds import Bucket, IdType, UploadKind

if TYPE_CHECKING:
    from worker.runtime import Runtime

STREAM_SCAN = 20_000  # stream entries searched per shard for an event not drained yet
HELD_SCAN = 20_000  # held entries searched when the held mark does not name its entry
REPLAY_HOPS = 5
FINAL = ("PROCESSED", "LINKAGE_FAILURE")
_BATCH_TIMES = ("sealed_at", "attempt_at", "uploaded_at", "checked_at", "final_at", "quarantined_at")
_COLUMN_TYPES = {t.column: t for t in IdType if t.column}


@dataclass(slots=True)
class Whereabouts:
    """One event's place: ``stream``, ``buffered``, ``batch`` (``state`` says which), ``held``, ``unknown``."""

    kind: str
    place: str
    counter_id: int | None = None
    batch: dict[str, Any] | None = None
    held: dict[str, Any] | None = None
    times: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def found(self) -> bool:
        return self.place != "unknown"

    @property
    def state(self) -> str:
        if self.batch is not None:
            return str(self.batch.get("state", ""))
        return {"stream": "IN_STREAM", "buffered": "BUFFERED", "held": "HELD"}.get(self.place, "UNKNOWN")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "place": self.place, "state": self.state}
        if self.counter_id is not None:
            out["counter_id"] = self.counter_id
        if self.batch is not None:
            out["batch"] = self.batch
        if self.held is not None:
            out["held"] = self.held
        out["times"] = self.times
        if self.note:
            out["note"] = self.note
        return out


def batch_view(rt: Runtime, batch_id: str) -> dict[str, Any] | None:
    """A batch record as the status API shows it (times in ms since the epoch, counts as numbers)."""
    record = cast(dict[str, str], rt.redis.hgetall(rt.keys.batch(batch_id)))
    if not record.get("bucket"):
        return None
    bucket = Bucket.decode(record["bucket"])
    out: dict[str, Any] = {"batch_id": batch_id, "counter_id": bucket.counter_id, "kind": bucket.kind.value}
    out["state"] = record.get("state", "")
    for name in ("upload_id", "status", "reason", "replay_of", "replayed_as", "discard_reason"):
        if record.get(name):
            out[name] = record[name]
    for name in ("rows", "attempts", "failures", "source_quantity", "line_quantity", "rejected_lines"):
        if record.get(name, "").isdigit():
            out[name] = int(record[name])
    out["final"] = out["state"] in FINAL
    out["times"] = {n: int(record[n]) for n in _BATCH_TIMES if record.get(n, "").isdigit()}
    return out


def _from_mark(rt: Runtime, kind: UploadKind, counter_id: int, shard: int, seq: str | None, bucket: str) -> Whereabouts:
    found = Whereabouts(kind.value, "batch", counter_id)
    if seq is None:
        found.place, found.note = "unknown", "accepted before batch numbers were recorded; see the counter's uploads"
        return found
    epoch = str(rt.redis.get(rt.keys.epoch(shard)))
    batch_id = make_batch_id(epoch, shard, seq)
    view = batch_view(rt, batch_id)
    hops = 0
    while view is not None and view.get("replayed_as") and hops < REPLAY_HOPS:
        replayed = batch_view(rt, str(view["replayed_as"]))
        if replayed is None:
            break
        replayed["replay_of"] = view["batch_id"]
        view, hops = replayed, hops + 1
    if view is not None:
        found.batch = view
        found.times = dict(view["times"])
        return found
    opened = rt.redis.hget(rt.keys.buffer_seq(shard), bucket) if bucket else None
    if opened is not None and str(opened) == str(seq):
        found.place = "buffered"
        due = rt.redis.zscore(rt.keys.due(shard), bucket)
        if due is not None:
            found.times = {"seal_due_at": int(due)}
        found.note = f"in the open buffer that will be sealed as batch {batch_id}"
        return found
    view = batch_view(rt, batch_id)  # sealed between the two reads above
    if view is not None:
        found.batch, found.times = view, dict(view["times"])
        return found
    found.place, found.note = "unknown", f"batch {batch_id} has no record (Redis lost it, or it was removed)"
    return found


def _search_stream(rt: Runtime, field_name: str, digest: str) -> tuple[int, int, int | None] | None:
    """(shard, accepted ms, counter) of a stream entry whose field holds the digest, among the newest
    entries; the counter is read from the entry's bucket (``<counter>:<kind>:<id type>``)."""
    for shard in range(rt.keys.shards):
        entries = cast(list[tuple[str, dict[str, str]]], rt.redis.xrevrange(rt.keys.stream(shard), count=STREAM_SCAN))
        for entry_id, fields in entries:
            if holds_digest(fields, field_name, digest):
                counter = fields.get("b", "").split(":", 1)[0]
                return shard, int(entry_id.split("-", 1)[0]), int(counter) if counter.isdigit() else None
    return None


def _in_stream(rt: Runtime, kind: UploadKind, field_name: str, digest: str) -> Whereabouts | None:
    hit = _search_stream(rt, field_name, digest)
    if hit is None:
        return None
    times = {"accepted_at": hit[1]}
    return Whereabouts(kind.value, "stream", hit[2], times=times, note="accepted, not drained yet")


def _held(rt: Runtime, provider: str, call_id: str) -> Whereabouts | None:
    mark = rt.redis.get(rt.keys.held_seen(dedup_digest(f"{provider}\x1f{call_id}")))
    if mark is None:
        return None
    entries: list[tuple[str, dict[str, str]]] = []
    if "-" in str(mark):  # hold.lua keeps the entry id in the mark
        entries = cast(list[tuple[str, dict[str, str]]], rt.redis.xrange(rt.keys.held, min=mark, max=mark))
    if not entries:
        entries = cast(list[tuple[str, dict[str, str]]], rt.redis.xrevrange(rt.keys.held, count=HELD_SCAN))
    needle = orjson.dumps(call_id).decode()
    for entry_id, fields in entries:
        body = fields.get("call", "")
        if needle not in body:
            continue
        call = orjson.loads(body)
        if call.get("call_id") == call_id and call.get("provider") == provider:
            held_at = int(fields.get("at") or entry_id.split("-", 1)[0])
            info = {"entry_id": entry_id, "reason": fields.get("reason", "")}
            counter = _routed_counter(rt, call.get("tracking_number"))
            return Whereabouts("calls", "held", counter, held=info, times={"held_at": held_at})
    return Whereabouts("calls", "released", note="was held; its held entry is gone (replayed or removed)")


def _routed_counter(rt: Runtime, number: object) -> int | None:
    """The counter a held call's tracking number routes to now (None: routed nowhere); a client API key
    sees its own held calls by it (ingest/tenancy.py)."""
    if not isinstance(number, str) or not number:
        return None
    route = cast(str | None, rt.redis.hget(rt.keys.routing, number))
    if route is None:
        return None
    return Route.from_json(number, route).counter_id


def where_call(rt: Runtime, provider: str, call_id: str) -> Whereabouts:
    """Where a call of ``provider`` with the provider's ``call_id`` is."""
    mark = locate(rt, provider=provider, call_id=call_id)
    if mark is not None:
        id_type = _COLUMN_TYPES.get(mark.id_column)
        bucket = Bucket(mark.counter_id, UploadKind.CALLS, id_type).encode() if id_type else ""
        buffer = _open_buffer(rt, mark.shard, bucket, mark.seq) if bucket else ""
        return _from_mark(rt, UploadKind.CALLS, mark.counter_id, mark.shard, mark.seq, buffer)
    found = _in_stream(rt, UploadKind.CALLS, "f", call_ref_digest(provider, call_id))
    if found is None:
        found = _held(rt, provider, call_id)
    if found is None:
        return Whereabouts("calls", "unknown")
    if found.place == "released":
        found.place = "unknown"
    return found


def where_event(rt: Runtime, kind: UploadKind, counter_id: int, source: str, item_id: str) -> Whereabouts:
    """Where a conversion or chat (its counter, source and id) is."""
    prefix = "conversion" if kind is UploadKind.CONVERSIONS else "chat"
    digest = dedup_digest(f"{prefix}\x1f{counter_id}\x1f{source}\x1f{item_id}")
    mark = locate(rt, counter_id=counter_id, dedup=digest)
    if mark is not None:
        buffer = _open_buffer(rt, mark.shard, f"{counter_id}:{kind.value}:", mark.seq)
        return _from_mark(rt, kind, counter_id, mark.shard, mark.seq, buffer)
    found = _in_stream(rt, kind, "d", digest)
    if found is None:
        return Whereabouts(kind.value, "unknown", counter_id)
    found.counter_id = counter_id
    return found


def _open_buffer(rt: Runtime, shard: int, prefix: str, seq: str | None) -> str:
    """The open buffer whose key starts with ``prefix`` and that reserved batch ``seq``; "" when none.
    A bucket has one buffer per column set (``<bucket>/<mask>``, worker/dataplane/lua/drain.lua), or the plain
    bucket for a buffer opened before that."""
    if seq is None:
        return ""
    opened = cast(dict[str, str], rt.redis.hgetall(rt.keys.buffer_seq(shard)))
    return next((b for b, s in opened.items() if b.startswith(prefix) and str(s) == str(seq)), "")
