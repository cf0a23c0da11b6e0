"""Quarantined batches: replay (without ever doubling a call Metrica may hold) and discard.

Replay first looks the batch up at Metrica by ``comment`` = batch id, whatever the quarantine reason
says: an upload whose outcome was unknown may be stored after all. If Metrica holds it, the batch is
*adopted* (``UPLOADED`` with that upload id; reconcile takes it from there). Otherwise its rows move,
in one script, to a new ``SEALED`` batch with a fresh id (so its retry count and lock history start
afresh), and the original becomes ``REPLAYED`` with ``replayed_as`` naming the new one. The caller
then sends the new batch's upload task; if that message is lost, the sweeper sends it.

Discard: ``DISCARDED`` with who, when and why; the rows are deleted. Both end in the ``done`` index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import structlog

from worker.dataplane.ids import batch_nonce, shard_of_batch
from worker.delivery.quota import QuotaGate
from worker.delivery.uploader import BatchRef, batch_rows, find_upload
from worker.errors import AdoptionError, CalltrackError
from worker.model.kinds import Bucket
from worker.store import redis_now_ms

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)

# KEYS: 1 record  2 rows  3 quarantine index  4 sealed index  5 done index  6 seq  7 epoch  8 marks
# ARGV: 1 batch id  2 shard prefix  3 shard  4 now ms  5 who  6 nonce (worker.dataplane.ids.batch_nonce)
#       7 record retention (s): the REPLAYED record expires then
# Returns {1, new batch id} or {0, why}.
_REPLAY = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'QUARANTINED' then return {0, state or 'MISSING'} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {0, 'NOROWS'} end
local epoch = redis.call('GET', KEYS[7])
if not epoch then return {0, 'NOEPOCH'} end
local id = 'CT' .. epoch .. 'S' .. ARGV[3] .. 'B' .. redis.call('INCR', KEYS[6]) .. 'R' .. ARGV[6]
local rec = redis.call('HMGET', KEYS[1], 'bucket', 'rows', 'bytes')
redis.call('RENAME', KEYS[2], ARGV[2] .. ':rows:' .. id)
if redis.call('EXISTS', KEYS[8]) == 1 then redis.call('RENAME', KEYS[8], ARGV[2] .. ':marks:' .. id) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
redis.call('HSET', ARGV[2] .. ':batch:' .. id, 'state', 'SEALED', 'bucket', rec[1], 'rows', rec[2],
  'bytes', rec[3] or 0, 'sealed_at', ARGV[4], 'attempts', 0, 'replay_of', ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], id)
redis.call('HSET', KEYS[1], 'state', 'REPLAYED', 'replayed_as', id, 'replayed_at', ARGV[4], 'replayed_by', ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
return {1, id}
"""

# KEYS: 1 record  2 quarantine index  3 uploaded index
# ARGV: 1 batch id  2 upload id  3 status  4 now ms  5 who
_ADOPT = """
if redis.call('HGET', KEYS[1], 'state') ~= 'QUARANTINED' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'UPLOADED', 'upload_id', ARGV[2], 'status', ARGV[3],
  'uploaded_at', ARGV[4], 'recorded_by', 'adopted_on_replay', 'replayed_by', ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return 1
"""

# KEYS: 1 record  2 rows  3 quarantine index  4 done index  5 the batch's dedup-mark list
# ARGV: 1 batch id  2 who  3 why  4 now ms  5 shard prefix  6 record retention (s)  7 '1' to keep the marks
# Returns {1, marks removed, '1' if the batch had a mark list} or {0}.
_DISCARD = """
if redis.call('HGET', KEYS[1], 'state') ~= 'QUARANTINED' then return {0, 0, '0'} end
redis.call('HSET', KEYS[1], 'state', 'DISCARDED', 'discarded_by', ARGV[2], 'discard_reason', ARGV[3],
  'discarded_at', ARGV[4])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
local had = redis.call('EXISTS', KEYS[5]) == 1 and '1' or '0'
local removed = 0
if ARGV[7] ~= '1' then
  local marks = redis.call('LRANGE', KEYS[5], 0, -1)
  for i = 1, #marks do
    local m = marks[i]
    if string.sub(m, 1, 3) == 'dd:' then  -- a field of a bucketed dedup hash: 'dd:<period>:<bucket>:<field>'
      removed = removed + redis.call('HDEL', ARGV[5] .. ':' .. string.sub(m, 1, -10), string.sub(m, -8))
    else  -- a key of its own (sealed before issue 18)
      removed = removed + redis.call('DEL', ARGV[5] .. ':' .. m)
    end
  end
  redis.call('DEL', KEYS[5])
  redis.call('HSET', KEYS[1], 'marks_removed', removed)
else
  redis.call('EXPIRE', KEYS[5], tonumber(ARGV[6]))
  redis.call('HSET', KEYS[1], 'marks_kept', redis.call('LLEN', KEYS[5]))
end
return {1, removed, had}
"""


class QuarantineError(CalltrackError):
    """The batch cannot be replayed or discarded (not quarantined, no token, Metrica unreachable)."""


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did: ``adopted`` (Metrica held it) or ``resubmitted`` as ``new_batch_id``."""

    batch_id: str
    action: str
    new_batch_id: str = ""
    upload_id: int | None = None


def _quarantined(rt: Runtime, batch_id: str) -> tuple[BatchRef, dict[str, str]]:
    try:
        shard = shard_of_batch(batch_id)
    except ValueError:
        raise QuarantineError(f"{batch_id[:64]!r} is not a batch id") from None
    record = cast(dict[str, str], rt.redis.hgetall(rt.keys.batch(batch_id)))
    if not record:
        raise QuarantineError(f"no batch {batch_id}")
    if record.get("state") != "QUARANTINED":
        raise QuarantineError(f"batch {batch_id} is {record.get('state')}, not QUARANTINED")
    return BatchRef(batch_id, shard, Bucket.decode(record["bucket"])), record


def replay(rt: Runtime, batch_id: str, *, who: str) -> ReplayResult:
    """Adopt the batch if Metrica holds it, else move its rows to a new sealed batch."""
    ref, record = _quarantined(rt, batch_id)
    token = rt.accounts.token_for(ref.bucket.counter_id, removed_ok=True)
    if token is None:
        raise QuarantineError(f"no OAuth token is configured for counter {ref.bucket.counter_id}")
    try:
        found = find_upload(rt, QuotaGate(rt), ref, token, batch_rows(record))
    except AdoptionError as error:
        raise QuarantineError(f"{batch_id} stays quarantined: {error}; compare the uploads, then discard") from None
    except CalltrackError as error:
        raise QuarantineError(f"cannot check Metrica for {batch_id} first, nothing changed: {error}") from None
    now = redis_now_ms(rt.redis)
    shard = ref.shard
    if found is not None:
        done = rt.redis.register_script(_ADOPT)(
            keys=[rt.keys.batch(batch_id), rt.keys.quarantine(shard), rt.keys.uploaded(shard)],
            args=[batch_id, found.id, found.status, now, who[:64]],
        )
        if not done:
            raise QuarantineError(f"batch {batch_id} changed meanwhile; nothing done")
        log.info("quarantine_adopted", batch_id=batch_id, upload_id=found.id)
        return ReplayResult(batch_id, "adopted", upload_id=found.id)
    prefix = rt.keys.prefix(shard)
    ok, value = rt.redis.register_script(_REPLAY)(
        keys=[
            rt.keys.batch(batch_id),
            rt.keys.rows(batch_id),
            rt.keys.quarantine(shard),
            rt.keys.sealed(shard),
            rt.keys.done(shard),
            f"{prefix}:seq",
            rt.keys.epoch(shard),
            rt.keys.marks(batch_id),
        ],
        args=[batch_id, prefix, shard, now, who[:64], batch_nonce(), rt.settings.record_retention_seconds],
    )
    if not int(ok):
        raise QuarantineError(f"batch {batch_id} cannot be replayed: {value}")
    log.info("quarantine_replayed", batch_id=batch_id, new_batch_id=str(value))
    return ReplayResult(batch_id, "resubmitted", new_batch_id=str(value))


@dataclass(frozen=True, slots=True)
class Discarded:
    """What a discard did with the batch's dedup marks: how many it removed, or why it kept them."""

    batch_id: str
    marks_removed: int
    marks: str  # "removed", "kept" (asked to), or "unknown" (sealed before marks were kept)

    def describe(self) -> str:
        if self.marks == "removed":
            return f"discarded; {self.marks_removed} dedup marks removed (the same calls are accepted again)"
        if self.marks == "kept":
            return "discarded; dedup marks kept (the same calls stay dropped as repeats for the dedup window)"
        return "discarded; its dedup marks are not known (sealed by an older version): kept for the dedup window"


def discard(rt: Runtime, batch_id: str, *, who: str, why: str, keep_marks: bool = False) -> Discarded:
    """Give the batch up for good: its rows are deleted, the record says who, when and why.

    The dedup marks its calls set are removed too (unless ``keep_marks``), so the same calls
    submitted again are accepted instead of being dropped as repeats for ``dedup_window_days``.
    """
    ref, _ = _quarantined(rt, batch_id)
    ok, removed, had = rt.redis.register_script(_DISCARD)(
        keys=[
            rt.keys.batch(batch_id),
            rt.keys.rows(batch_id),
            rt.keys.quarantine(ref.shard),
            rt.keys.done(ref.shard),
            rt.keys.marks(batch_id),
        ],
        args=[
            batch_id,
            who[:64],
            why[:500],
            redis_now_ms(rt.redis),
            rt.keys.prefix(ref.shard),
            rt.settings.record_retention_seconds,
            "1" if keep_marks else "0",
        ],
    )
    if not int(ok):
        raise QuarantineError(f"batch {batch_id} changed meanwhile; nothing done")
    marks = "unknown" if had != "1" else ("kept" if keep_marks else "removed")
    log.warning("quarantine_discarded", batch_id=batch_id, who=who[:64], marks=marks, marks_removed=int(removed))
    return Discarded(batch_id, int(removed), marks)
