"""Upload: post one sealed batch to Metrica exactly once, and record what Metrica answered.

One uploader per counter at a time holds the counter's lock, valued with a fencing token; the
batch record carries the token of the attempt that owns it, so a stale uploader (its lock lapsed)
cannot record over a newer one. The batch id travels in the upload's ``comment``: when an earlier
attempt ended without a known outcome (timeout, dropped connection, 5xx, a killed worker), the next
one first looks for that comment in the counter's upload list and adopts the upload it finds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import structlog
from pydantic import SecretStr

from worker.csvfile import build_csv
from worker.errors import DeferredError, MetricaError, PermanentError, RetryableError
from worker.keys import shard_of_batch
from worker.kinds import Bucket
from worker.metrica import LIST_PAGE, Uploading
from worker.runtime import Runtime

log = structlog.get_logger(__name__)
BUSY_RETRY_SECONDS = 1.0


class UploadOutcome(StrEnum):
    """How one run of the upload step ended."""

    POSTED = "posted"  # Metrica accepted the file now
    ADOPTED = "adopted"  # an earlier attempt had stored it; its upload was recorded
    NOTHING_TO_DO = "nothing_to_do"  # already uploaded, final, quarantined or gone
    QUARANTINED = "quarantined"  # Metrica refused it for good; rows kept for replay
    STALE = "stale"  # a newer attempt owns the batch


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class BatchRef:
    """A batch id with what its record says about where it goes."""

    batch_id: str
    shard: int
    bucket: Bucket


def _load(rt: Runtime, batch_id: str) -> tuple[BatchRef, dict[str, str]] | None:
    record = cast(dict[str, str], rt.redis.hgetall(rt.keys.batch(batch_id)))
    if not record:
        return None
    return BatchRef(batch_id, shard_of_batch(batch_id), Bucket.decode(record["bucket"])), record


class CounterLock:
    """The counter's upload lock; its value is a fencing token that only grows."""

    def __init__(self, rt: Runtime, ref: BatchRef) -> None:
        self._rt = rt
        self._key = rt.keys.lock(ref.shard, ref.bucket.counter_id)
        self._fence_key = rt.keys.fence(ref.shard, ref.bucket.counter_id)
        self.token = ""

    def acquire(self) -> bool:
        token = str(self._rt.redis.incr(self._fence_key))
        lease_ms = self._rt.settings.upload_lock_seconds * 1000
        if self._rt.redis.set(self._key, token, nx=True, px=lease_ms):
            self.token = token
            return True
        return False

    def release(self) -> None:
        if self.token:
            self._rt.scripts.release_lock(keys=[self._key], args=[self.token])
            self.token = ""

    def __enter__(self) -> CounterLock:
        if not self.acquire():
            # Locks are held for one upload, seconds; the lease only matters when a holder died.
            ttl_s = max(int(self._rt.redis.pttl(self._key)), 0) / 1000
            raise DeferredError("the counter's upload lock is held", retry_after=min(ttl_s, BUSY_RETRY_SECONDS))
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def find_upload(rt: Runtime, ref: BatchRef, token: SecretStr) -> Uploading | None:
    """The counter's upload whose comment is this batch id, if Metrica holds one."""
    spec = ref.bucket.spec
    offset = 0
    while True:
        page = rt.metrica.uploadings(spec, ref.bucket.counter_id, token, limit=LIST_PAGE, offset=offset)
        for item in page:
            if item.comment == ref.batch_id:
                return item
        if len(page) < LIST_PAGE:
            return None
        offset += len(page)


def _record(rt: Runtime, ref: BatchRef, fence: str, uploading: Uploading, how: str) -> bool:
    recorded = rt.scripts.record_upload(
        keys=[rt.keys.batch(ref.batch_id), rt.keys.sealed(ref.shard), rt.keys.uploaded(ref.shard)],
        args=[ref.batch_id, fence, uploading.id, uploading.status, now_ms(), how],
    )
    if recorded:
        log.info("batch_uploaded", how=how, upload_id=uploading.id, status=uploading.status)
    else:
        log.warning("upload_not_recorded_stale_fence", upload_id=uploading.id)
    return bool(recorded)


def _quarantine(rt: Runtime, ref: BatchRef, fence: str, reason: str) -> bool:
    done = rt.scripts.quarantine(
        keys=[rt.keys.batch(ref.batch_id), rt.keys.sealed(ref.shard), rt.keys.quarantine(ref.shard)],
        args=[ref.batch_id, fence, reason[:1000], now_ms()],
    )
    if done:
        log.error("batch_quarantined", reason=reason)
    return bool(done)


def upload_batch(rt: Runtime, batch_id: str) -> UploadOutcome:
    """Post the batch unless Metrica already holds it; raise ``RetryableError`` to be retried later."""
    loaded = _load(rt, batch_id)
    if loaded is None:
        return UploadOutcome.NOTHING_TO_DO
    ref, record = loaded
    if record["state"] not in ("SEALED", "UPLOADING"):
        return UploadOutcome.NOTHING_TO_DO
    counter = ref.bucket.counter_id
    with structlog.contextvars.bound_contextvars(counter_id=counter, batch_id=batch_id):
        token = rt.settings.token_for(counter)
        if token is None:
            _quarantine(rt, ref, "", f"no OAuth token is configured for counter {counter}")
            return UploadOutcome.QUARANTINED
        with CounterLock(rt, ref) as lock:
            return _attempt(rt, ref, lock.token, token)


def _attempt(rt: Runtime, ref: BatchRef, fence: str, token: SecretStr) -> UploadOutcome:
    key = rt.keys.batch(ref.batch_id)
    state, previous_at, ended = rt.scripts.begin_upload(keys=[key], args=[fence, now_ms()])
    if state not in ("SEALED", "UPLOADING"):
        return UploadOutcome.NOTHING_TO_DO
    if state == "UPLOADING":
        # An earlier attempt may have stored the file: look before posting again.
        if ended != "1" and previous_at:
            waited = (now_ms() - int(previous_at)) / 1000
            safe = float(rt.settings.upload_lock_seconds)
            if waited < safe:
                _end(rt, key, fence, stored_nothing=False, error="deferred: earlier attempt may be in flight")
                raise DeferredError("an earlier attempt may still be in flight", retry_after=safe - waited)
        found = _guarded(rt, key, fence, lambda: find_upload(rt, ref, token))
        if found is not None:
            _record(rt, ref, fence, found, "adopted")
            return UploadOutcome.ADOPTED
    rows = cast(list[str], rt.redis.lrange(rt.keys.rows(ref.batch_id), 0, -1))
    content = build_csv(ref.bucket.spec, ref.bucket.id_type, rows)
    log.info("upload_posting", rows=len(rows), bytes=len(content), kind=ref.bucket.kind.value)
    try:
        uploading = _guarded(
            rt,
            key,
            fence,
            lambda: rt.metrica.upload(
                ref.bucket.spec,
                ref.bucket.counter_id,
                token,
                content,
                comment=ref.batch_id,
                new_goal_name=rt.settings.new_goal_name,
            ),
        )
    except PermanentError as error:
        _quarantine(rt, ref, fence, f"Metrica refused the file: {error}")
        return UploadOutcome.QUARANTINED
    return UploadOutcome.POSTED if _record(rt, ref, fence, uploading, "posted") else UploadOutcome.STALE


def _guarded(rt: Runtime, key: str, fence: str, call: Any) -> Any:
    """Run one Metrica request; on a retryable failure note on the batch whether anything was stored."""
    try:
        return call()
    except RetryableError as error:
        _end(rt, key, fence, stored_nothing=not error.outcome_unknown, error=str(error))
        log.warning("metrica_request_failed", error=str(error), outcome_unknown=error.outcome_unknown)
        raise


def _end(rt: Runtime, key: str, fence: str, *, stored_nothing: bool, error: str) -> None:
    rt.scripts.end_attempt(keys=[key], args=[fence, "1" if stored_nothing else "0", error[:500]])


def give_up(rt: Runtime, batch_id: str, last_error: MetricaError) -> UploadOutcome:
    """After the last retry: adopt the upload if Metrica holds it after all, else quarantine."""
    loaded = _load(rt, batch_id)
    if loaded is None or loaded[1]["state"] not in ("SEALED", "UPLOADING"):
        return UploadOutcome.NOTHING_TO_DO
    ref, _ = loaded
    with structlog.contextvars.bound_contextvars(counter_id=ref.bucket.counter_id, batch_id=batch_id):
        token = rt.settings.token_for(ref.bucket.counter_id)
        with CounterLock(rt, ref) as lock:
            state, _, _ = rt.scripts.begin_upload(keys=[rt.keys.batch(batch_id)], args=[lock.token, now_ms()])
            if state not in ("SEALED", "UPLOADING"):
                return UploadOutcome.NOTHING_TO_DO
            if token is not None and state == "UPLOADING":
                try:
                    found = find_upload(rt, ref, token)
                except MetricaError as error:
                    found = None
                    last_error = error
                if found is not None:
                    _record(rt, ref, lock.token, found, "adopted")
                    return UploadOutcome.ADOPTED
            _quarantine(rt, ref, lock.token, f"gave up after repeated failures; last: {last_error}")
            return UploadOutcome.QUARANTINED
