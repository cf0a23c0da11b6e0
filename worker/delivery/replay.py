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

from worker.delivery.quota import QuotaGate
from worker.delivery.uploader import BatchRef, batch_rows, find_upload
from worker.errors import AdoptionError, CalltrackError
from worker.keys import batch_nonce, shard_of_batch
from worker.model.kinds import Bucket
from worker.store import redis_now_ms

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)

# KEYS: 1 record  2 rows  3 quarantine index  4 sealed index  5 done index  6 seq  7 epoch
# ARGV: 1 batch id  2 shard prefix  3 shard  4 now ms  5 who  6 nonce (worker.keys.batch_nonce)
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

# KEYS: 1 record  2 rows  3 quarantine index  4 done index
# ARGV: 1 batch id  2 who  3 why  4 now ms
_DISCARD = """
if redis.call('HGET', KEYS[1], 'state') ~= 'QUARANTINED' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'DISCARDED', 'discarded_by', ARGV[2], 'discard_reason', ARGV[3],
  'discarded_at', ARGV[4])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
return 1
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
    token = rt.settings.token_for(ref.bucket.counter_id)
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
        ],
        args=[batch_id, prefix, shard, now, who[:64], batch_nonce()],
    )
    if not int(ok):
        raise QuarantineError(f"batch {batch_id} cannot be replayed: {value}")
    log.info("quarantine_replayed", batch_id=batch_id, new_batch_id=str(value))
    return ReplayResult(batch_id, "resubmitted", new_batch_id=str(value))


def discard(rt: Runtime, batch_id: str, *, who: str, why: str) -> None:
    """Give the batch up for good: its rows are deleted, the record says who, when and why."""
    ref, _ = _quarantined(rt, batch_id)
    done = rt.redis.register_script(_DISCARD)(
        keys=[rt.keys.batch(batch_id), rt.keys.rows(batch_id), rt.keys.quarantine(ref.shard), rt.keys.done(ref.shard)],
        args=[batch_id, who[:64], why[:500], redis_now_ms(rt.redis)],
    )
    if not done:
        raise QuarantineError(f"batch {batch_id} changed meanwhile; nothing done")
    log.warning("quarantine_discarded", batch_id=batch_id, who=who[:64])
