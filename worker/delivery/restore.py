"""Restores: notice that Redis was put back to an earlier backup, hold the shard, wait for the operator.

A backup taken while work was in flight forgets the batches sealed after it: their calls are back in
the restored stream and open buffers, and their records are gone, so the drain seals them again under
new batch ids (the nonce keeps ids unique) and an upload would post them a second time. No record in
Redis can tell this (the backup holds every record as it was); Metrica can: it holds the uploads of
the forgotten batches, each with its batch id as comment ``CT<epoch>S<shard>B<seq>R<nonce>``.

Before a counter's first post after this process started, or after Redis restarted (its ``run_id``
changed: a restore needs a restart), the uploader lists the counter's uploads once. A comment of the
shard's current epoch whose batch has no record here is *evidence* when its ``seq`` is above the
shard's ``seq`` counter (the counter went back) or when the store keeps another nonce for that seq
(the seq was handed out again). In normal operation neither happens: a seq is issued once, and its
nonce is kept (``bn:<period>``) for as long as the dedup window. Evidence holds the shard
(``<ns>:{sN}:restored``): the drain skips it and uploads wait (``RestoreHeldError``), visible in
``ctl status``/``ctl doctor``, ``/metrics`` (``calltrack_restore_held_shards``) and the console.

The operator decides (``ctl restore confirm``): confirming releases the shard, knowing that the calls
of the forgotten uploads are posted again (the README's promise names that bound); the shard's
sequence jumps past every seq the forgotten uploads can carry, and evidence up to there is accepted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import structlog
from redis.cluster import RedisCluster
from redis.exceptions import WatchError

from worker.dataplane.ids import is_batch_id, parse_batch_id
from worker.dataplane.marks import dedup_periods
from worker.delivery.metrica import LIST_PAGE, Uploading
from worker.delivery.quota import Purpose, QuotaGate
from worker.delivery.restore_hold import CONFIRMED, HELD, ensure_not_held, held
from worker.errors import DeferredError, PermanentError, QuotaError, RetryableError
from worker.store import redis_now_ms

if TYPE_CHECKING:
    from pydantic import SecretStr

    from worker.model.kinds import Bucket
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)

SEQ_JUMP = 10_000_000  # a confirmation moves the shard's sequence this far past the highest seq seen
_checked: set[tuple[str, str, int, str]] = set()  # (namespace, Redis run id, counter, kind) checked here
_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Evidence:
    """An upload at Metrica the store cannot account for."""

    batch_id: str
    seq: int
    why: str


def incarnation(redis: Any) -> str:
    """Redis's ``run_id`` (every master's, on a cluster): it changes whenever Redis restarts."""
    info: dict[str, Any] = (
        redis.info("server", target_nodes=RedisCluster.PRIMARIES)
        if isinstance(redis, RedisCluster)
        else redis.info("server")
    )
    if "run_id" in info:
        return str(info["run_id"])
    return ",".join(sorted(str(node.get("run_id")) for node in info.values() if isinstance(node, dict)))


def evidence(rt: Runtime, shard: int, comments: list[str]) -> Evidence | None:
    """The first comment that proves the shard's data went back in time, or None."""
    epoch = cast(str | None, rt.redis.get(rt.keys.epoch(shard)))
    parsed = [(c, parse_batch_id(c)) for c in comments if is_batch_id(c)]
    mine = [(c, b.seq, b.nonce) for c, b in parsed if b.epoch == epoch and b.shard == shard and b.nonce]
    if not mine or epoch is None:
        return None
    s = rt.settings
    periods = dedup_periods(redis_now_ms(rt.redis), s.dedup_window_days * 86_400, s.dedup_period_days)
    pipe = rt.redis.pipeline(transaction=False)
    pipe.get(rt.keys.seq(shard))
    pipe.hget(rt.keys.restore_hold(shard), "accepted_seq")
    for batch_id, seq, _ in mine:
        pipe.exists(rt.keys.batch(batch_id))
        for period in periods:
            pipe.hget(rt.keys.batch_nonces(shard, period), str(seq))
    reply = pipe.execute()
    counter, accepted = int(reply[0] or 0), int(reply[1] or 0)
    step = 1 + len(periods)
    for i, (batch_id, seq, nonce) in enumerate(mine):
        known, nonces = reply[2 + i * step], {n for n in reply[3 + i * step : 2 + (i + 1) * step] if n}
        if known or seq <= accepted:
            continue
        if seq > counter:
            return Evidence(batch_id, seq, f"seq {seq} is above the shard's sequence {counter}")
        if nonces and nonce not in nonces:
            return Evidence(batch_id, seq, f"seq {seq} was handed out again with another nonce")
    return None


def hold(rt: Runtime, shard: int, counter_id: int, found: Evidence) -> None:
    """Hold the shard until the operator confirms (idempotent: the first evidence is kept)."""
    key = rt.keys.restore_hold(shard)
    pipe = rt.redis.pipeline(transaction=True)
    pipe.hsetnx(key, "detected_at", redis_now_ms(rt.redis))
    pipe.hset(key, mapping={"state": HELD, "evidence": found.batch_id, "why": found.why, "counter": counter_id})
    pipe.persist(key)
    pipe.execute()
    _raise_seen(rt, key, found.seq)  # the highest seq seen at Metrica: what a confirmation accepts
    log.error("restore_detected", shard=shard, counter_id=counter_id, evidence=found.batch_id, why=found.why)


def _raise_seen(rt: Runtime, key: str, seq: int) -> None:
    with rt.redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                cast(Any, pipe).watch(key)
                seen = int(pipe.hget(key, "seen_seq") or 0)
                pipe.multi()
                pipe.hset(key, "seen_seq", max(seen, seq))
                pipe.execute()
                return
            except WatchError:  # another process raised it meanwhile
                continue


def check_before_post(rt: Runtime, gate: QuotaGate, bucket: Bucket, shard: int, token: SecretStr) -> None:
    """Once per counter, kind (each its own list) and Redis incarnation: list its uploads and hold
    the shard on evidence.

    Raises ``RestoreHeldError`` when the shard is (now) held."""
    ensure_not_held(rt, shard)
    if not rt.settings.restore_check:
        return
    tag = (rt.keys.namespace, incarnation(rt.redis), bucket.counter_id, bucket.kind.value)
    with _lock:
        if tag in _checked:
            return
    try:
        comments = _comments(rt, gate, bucket, token)
    except QuotaError:
        raise  # Metrica's own quota answer: the upload task waits by its type
    except RetryableError as error:
        raise DeferredError(f"cannot look for a restore at Metrica yet: {error}", retry_after=15.0) from None
    except PermanentError:
        return  # a refused token or counter: the post meets the same answer and is handled there
    found = evidence(rt, shard, comments)
    if found is not None:
        hold(rt, shard, bucket.counter_id, found)
        ensure_not_held(rt, shard)
    with _lock:
        _checked.add(tag)


def _comments(rt: Runtime, gate: QuotaGate, bucket: Bucket, token: SecretStr) -> list[str]:
    comments: list[str] = []
    offset = 0
    while True:
        with gate.permit(token, Purpose.POLL):
            page: list[Uploading] = rt.metrica.uploadings(
                bucket.spec, bucket.counter_id, token, limit=LIST_PAGE, offset=offset
            )
        comments.extend(item.comment for item in page)
        if len(page) < LIST_PAGE:
            return comments
        offset += len(page)


def confirm(rt: Runtime, shard: int) -> dict[str, str] | None:
    """The operator's decision: release the shard, accepting every upload the restore forgot.

    Which seqs those uploads carry is known only up to the highest one seen, so the shard's sequence
    jumps ``SEQ_JUMP`` past it (more batches than a shard seals between any backup and its restore):
    evidence up to the jump is accepted, and the batches sealed from now on are numbered above it, so
    a later restore is seen again. Its sealed batches are due for dispatch at once. Returns the
    record as it was, or None when the shard was not held. The confirmed record keeps
    ``accepted_seq`` for the dedup window (after it, the store keeps no nonce to compare with)."""
    key, seq_key = rt.keys.restore_hold(shard), rt.keys.seq(shard)
    record = held(rt, shard)
    if record.get("state") != HELD:
        return None
    s = rt.settings
    waiting = cast(list[str], rt.redis.zrange(rt.keys.sealed(shard), 0, -1))
    with rt.redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                cast(Any, pipe).watch(seq_key, key)
                counter = int(pipe.get(seq_key) or 0)
                seen = max(int(record.get("seen_seq") or 0), int(record.get("accepted_seq") or 0))
                accepted = max(counter, seen) + SEQ_JUMP
                pipe.multi()
                pipe.set(seq_key, accepted)
                pipe.hset(key, mapping={"state": CONFIRMED, "accepted_seq": accepted,
                                        "confirmed_at": redis_now_ms(rt.redis)})  # fmt: skip
                pipe.expire(key, (s.dedup_window_days + s.dedup_period_days) * 86_400)
                if waiting:  # parked while held: the sweep sends their upload tasks at its next run
                    pipe.zadd(rt.keys.sealed(shard), dict.fromkeys(waiting, 0), xx=True)
                pipe.execute()
                break
            except WatchError:
                continue
    log.warning("restore_confirmed", shard=shard, accepted_seq=accepted, evidence=record.get("evidence"))
    return record


def forget_checks() -> None:
    """Check every counter again on its next post, as after a Redis restart (tests restore a backup in
    place, without one)."""
    with _lock:
        _checked.clear()
