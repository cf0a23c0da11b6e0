"""Upload: post one sealed batch to Metrica exactly once, and record what Metrica answered.

One uploader per counter at a time holds the counter's lock, valued with a fencing token; the
batch record carries the token of the attempt that owns it, so a stale uploader (its lock lapsed)
cannot record over a newer one. The batch id travels in the upload's ``comment``: when an earlier
attempt ended without a known outcome (timeout, dropped connection, 5xx, a killed worker), the next
one first looks for that comment in the counter's upload list and adopts the upload it finds.

Every request first takes a permit from :mod:`worker.delivery.quota`; without one the batch is left exactly
as it was and the task is retried later.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, cast

import structlog
from pydantic import SecretStr
from redis.exceptions import OutOfMemoryError

from worker.dataplane.ids import fingerprint, shard_of_batch
from worker.dataplane.scripts import run_many
from worker.delivery import counter_setup, restore
from worker.delivery.csvfile import build_csv
from worker.delivery.metrica import LIST_PAGE, Uploading
from worker.delivery.quota import Purpose, QuotaGate, UploadsPaused
from worker.errors import (
    AdoptionError,
    AuthError,
    DeferredError,
    MetricaError,
    PermanentError,
    QuotaError,
    RetryableError,
)
from worker.failpoints import arm, failpoint
from worker.model.kinds import Bucket
from worker.store import redis_now_ms

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)
BUSY_RETRY_SECONDS = 1.0


class UploadOutcome(StrEnum):
    """How one run of the upload step ended."""

    POSTED = "posted"  # Metrica accepted the file now
    ADOPTED = "adopted"  # an earlier attempt had stored it; its upload was recorded
    NOTHING_TO_DO = "nothing_to_do"  # already uploaded, final, quarantined or gone
    QUARANTINED = "quarantined"  # Metrica refused it for good; rows kept for replay
    PAUSED = "paused"  # Metrica refused the token (401/403); waits for a new token
    STALE = "stale"  # a newer attempt owns the batch


def now_ms() -> int:
    """This host's clock in ms; the pipeline itself compares times by Redis's clock (``clock_ms``)."""
    return int(time.time() * 1000)


def clock_ms(rt: Runtime) -> int:
    """Redis's clock in ms (``TIME``), the one clock of the whole fleet."""
    return redis_now_ms(rt.redis)


@dataclass(frozen=True, slots=True)
class BatchRef:
    """A batch id with what its record says about where it goes."""

    batch_id: str
    shard: int
    bucket: Bucket


def load(rt: Runtime, batch_id: str) -> tuple[BatchRef, dict[str, str]] | None:
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

    def __enter__(self) -> CounterLock:
        lease_ms = self._rt.settings.upload_lock_seconds * 1000
        token, taken = self._rt.scripts.acquire_lock(keys=[self._key, self._fence_key], args=[lease_ms])
        if not token:
            # Locks are held for one upload, seconds; the lease only matters when a holder died.
            ttl_s = int(taken) / 1000
            raise DeferredError("the counter's upload lock is held", retry_after=min(ttl_s, BUSY_RETRY_SECONDS))
        self.token = str(token)
        return self

    def __exit__(self, *exc: object) -> None:
        self._rt.scripts.release_lock(keys=[self._key], args=[self.token])


def find_upload(rt: Runtime, gate: QuotaGate, ref: BatchRef, token: SecretStr, rows: int) -> Uploading | None:
    """The counter's upload whose comment is this batch id, if Metrica holds one; None if none.

    Raises ``AdoptionError`` unless exactly one upload carries the comment with ``source_quantity``
    equal to ``rows``: a second file with the comment, or another row count, means the comment may
    name another file (a batch id from before a Redis loss), and adopting it would lose calls.
    """
    matches: list[Uploading] = []
    offset = 0
    while True:
        with gate.permit(token, Purpose.POLL):
            page = rt.metrica.uploadings(ref.bucket.spec, ref.bucket.counter_id, token, limit=LIST_PAGE, offset=offset)
        matches.extend(item for item in page if item.comment == ref.batch_id)
        if len(page) < LIST_PAGE:
            break
        offset += len(page)
    if not matches:
        return None
    if len(matches) > 1:
        ids = ", ".join(str(m.id) for m in matches[:5])
        raise AdoptionError(f"ambiguous adoption: {len(matches)} uploads carry the batch id as comment ({ids})")
    (found,) = matches
    if found.source_quantity != rows:
        raise AdoptionError(
            f"adoption refused: upload {found.id} carries the batch id but has source_quantity "
            f"{found.source_quantity}, the batch has {rows} rows"
        )
    return found


def batch_rows(record: dict[str, str] | None) -> int:
    return int((record or {}).get("rows") or 0)


class Attempt:
    """One attempt at one batch, under the counter lock and its fencing token."""

    def __init__(self, rt: Runtime, gate: QuotaGate, ref: BatchRef, fence: str, token: SecretStr) -> None:
        self.rt, self.gate, self.ref, self.fence, self.token = rt, gate, ref, fence, token
        self.key = rt.keys.batch(ref.batch_id)

    def claim(self) -> str:
        """Mark the batch UPLOADING under our fence; returns the state it had."""
        state, _, _ = self.rt.scripts.begin_upload(keys=[self.key], args=[self.fence])
        return str(state)

    def claim_durably(self) -> None:
        """Mark the batch UPLOADING, then wait until the configured durability holds that mark (and,
        replication being in order, the batch's seal and rows before it): a failover or a lost last
        second after the file is posted then finds the batch UPLOADING, looks Metrica up by comment
        and adopts the file, instead of posting it again or sealing its calls into another batch.

        Raises ``DeferredError`` when the durability is not confirmed in time; nothing was posted.
        """
        rt = self.rt
        durability = rt.durability
        replies = run_many(rt.redis, [(rt.scripts.begin_upload, [self.key], [self.fence])], durability.commands)
        if isinstance(replies[0], Exception):
            raise replies[0]
        shortfall = durability.shortfall(replies[1:])
        if shortfall is not None:
            self.end(stored_nothing=True, failure=False, error=shortfall)
            log.warning("upload_claim_not_durable", reason=shortfall)
            raise DeferredError(f"the batch's claim is not durable yet ({shortfall}); posting later", retry_after=1.0)

    def record(self, uploading: Uploading, how: str) -> bool:
        rt, ref = self.rt, self.ref
        recorded = rt.scripts.record_upload(
            keys=[self.key, rt.keys.sealed(ref.shard), rt.keys.uploaded(ref.shard)],
            args=[ref.batch_id, self.fence, uploading.id, uploading.status, "", how],
        )
        if recorded:
            log.info("batch_uploaded", how=how, upload_id=uploading.id, status=uploading.status)
            rt.metrics.incr("batches_uploaded", ref.bucket.kind.value, how)
        else:
            log.warning("upload_not_recorded_stale_fence", upload_id=uploading.id)
        return bool(recorded)

    def end(self, *, stored_nothing: bool, failure: bool, error: str) -> tuple[int, float]:
        """Mark the attempt over; the batch's failure count and seconds since its first failure."""
        failures, failing_ms = self.rt.scripts.end_attempt(
            keys=[self.key], args=[self.fence, "1" if stored_nothing else "0", error[:500], "1" if failure else "0"]
        )
        return int(failures), int(failing_ms) / 1000

    def quarantine(self, reason: str) -> bool:
        return quarantine(self.rt, self.ref, self.fence, reason)


def quarantine(rt: Runtime, ref: BatchRef, fence: str, reason: str) -> bool:
    done = rt.scripts.quarantine(
        keys=[rt.keys.batch(ref.batch_id), rt.keys.sealed(ref.shard), rt.keys.quarantine(ref.shard)],
        args=[ref.batch_id, fence, reason[:1000]],
    )
    if done:
        log.error("batch_quarantined", reason=reason)
        rt.metrics.incr("batches_quarantined", ref.bucket.kind.value)
    return bool(done)


class UploadFailed(Exception):
    """A retryable failure of the file, with the batch's failure count so far (for back-off) and
    the seconds since its first failure (Redis TIME; the give-up window runs from it)."""

    def __init__(self, error: RetryableError, failures: int, failing_for: float) -> None:
        super().__init__(str(error))
        self.error = error
        self.failures = failures
        self.failing_for = failing_for


def failing_for(rt: Runtime, key: str) -> float:
    """Seconds since the batch's first failure, by Redis's clock (0 when it never failed)."""
    pipe = rt.redis.pipeline(transaction=False)
    pipe.hget(key, "first_failure_at")
    pipe.time()
    first, (seconds, micros) = pipe.execute()
    return max(0.0, seconds + micros / 1e6 - int(first) / 1000) if first else 0.0


def upload_batch(rt: Runtime, batch_id: str, gate: QuotaGate | None = None) -> UploadOutcome:
    """Post the batch unless Metrica already holds it.

    Raises ``DeferredError`` (busy counter, no quota permit, paused token, an earlier attempt maybe
    in flight), ``QuotaError`` (Metrica's own 429/420) or ``UploadFailed`` (5xx or no answer).
    """
    loaded = load(rt, batch_id)
    if loaded is None or loaded[1]["state"] not in ("SEALED", "UPLOADING"):
        return UploadOutcome.NOTHING_TO_DO
    ref, _ = loaded
    gate = gate or QuotaGate(rt)
    counter = ref.bucket.counter_id
    with structlog.contextvars.bound_contextvars(counter_id=counter, batch_id=batch_id):
        token = rt.accounts.token_for(counter)
        if token is None:
            # No credentials: the batch stays SEALED and waits (parked), never posted elsewhere.
            log.warning("upload_waits_for_a_token", counter_id=counter)
            raise UploadsPaused(
                f"no Metrica token is configured for counter {counter}; its batches wait", retry_after=300
            )
        gate.check_paused(token, counter)
        # Setup runs in its own task (tasks/setup.py); here only whether the join window is open.
        counter_setup.hold(rt, ref.bucket, batch_id)
        restore.check_before_post(rt, gate, ref.bucket, ref.shard, token)  # a restored shard waits
        with CounterLock(rt, ref) as lock:
            return _attempt(Attempt(rt, gate, ref, lock.token, token))


def _attempt(at: Attempt) -> UploadOutcome:
    rt, ref = at.rt, at.ref
    state, attempt_at, fence, ended, row_count = rt.redis.hmget(
        at.key, ["state", "attempt_at", "fence", "ended", "rows"]
    )
    if state not in ("SEALED", "UPLOADING"):
        return UploadOutcome.NOTHING_TO_DO
    if state == "UPLOADING":
        # An earlier attempt may have stored the file: look before posting again.
        if ended != fence and attempt_at:
            waited = (clock_ms(rt) - int(attempt_at)) / 1000
            lease = float(rt.settings.upload_lock_seconds)
            if waited < lease:
                raise DeferredError("an earlier attempt may still be in flight", retry_after=lease - waited)
        try:
            found = find_upload(rt, at.gate, ref, at.token, int(row_count or 0))
        except RetryableError as error:
            raise UploadFailed(error, int(rt.redis.hget(at.key, "failures") or 0), failing_for(rt, at.key)) from None
        except AdoptionError as error:
            at.claim()
            at.quarantine(str(error))
            return UploadOutcome.QUARANTINED
        if found is not None:
            at.claim()
            at.record(found, "adopted")
            return UploadOutcome.ADOPTED
    with at.gate.permit(at.token, Purpose.UPLOAD, wait=rt.settings.quota_wait_seconds):
        at.claim_durably()
        # Which token posts it (its fingerprint, never the token): a removed counter's upload is still
        # reconciled with it (worker/delivery/reconciler.py). A full Redis only loses this hint.
        with contextlib.suppress(OutOfMemoryError):
            rt.redis.hset(at.key, "token_fp", fingerprint(at.token))
        rows = cast(list[str], rt.redis.lrange(rt.keys.rows(ref.batch_id), 0, -1))
        content = build_csv(ref.bucket.spec, ref.bucket.id_type, rows)
        log.info("upload_posting", rows=len(rows), bytes=len(content), kind=ref.bucket.kind.value)
        failpoint("before_upload_request")
        arm("during_upload_request", within_seconds=0.2)
        try:
            uploading = rt.metrica.upload(
                ref.bucket.spec,
                ref.bucket.counter_id,
                at.token,
                content,
                comment=ref.batch_id,
                new_goal_name=rt.accounts.goal_name(ref.bucket.counter_id),
            )
        except QuotaError as error:
            at.end(stored_nothing=True, failure=False, error=str(error))
            raise
        except RetryableError as error:
            failures, failing = at.end(stored_nothing=not error.outcome_unknown, failure=True, error=str(error))
            log.warning("metrica_request_failed", error=str(error), outcome_unknown=error.outcome_unknown)
            raise UploadFailed(error, failures, failing) from None
        except AuthError as error:
            at.end(stored_nothing=True, failure=False, error=str(error))
            at.gate.pause(at.token, ref.bucket.counter_id if error.error_type == "access_denied" else None, str(error))
            return UploadOutcome.PAUSED
        except PermanentError as error:
            at.quarantine(f"Metrica refused the file: {error}")
            return UploadOutcome.QUARANTINED
        failpoint("after_upload_answer")
        return UploadOutcome.POSTED if at.record(uploading, "posted") else UploadOutcome.STALE


def give_up(rt: Runtime, batch_id: str, last_error: MetricaError, gate: QuotaGate | None = None) -> UploadOutcome:
    """After the last retry: adopt the upload if Metrica holds it after all, else quarantine."""
    loaded = load(rt, batch_id)
    if loaded is None or loaded[1]["state"] not in ("SEALED", "UPLOADING"):
        return UploadOutcome.NOTHING_TO_DO
    ref, record = loaded
    gate = gate or QuotaGate(rt)
    with structlog.contextvars.bound_contextvars(counter_id=ref.bucket.counter_id, batch_id=batch_id):
        token = rt.accounts.token_for(ref.bucket.counter_id)
        with CounterLock(rt, ref) as lock:
            at = Attempt(rt, gate, ref, lock.token, token or SecretStr(""))
            if token is not None and record["state"] == "UPLOADING":
                try:
                    found = find_upload(rt, gate, ref, token, batch_rows(record))
                except (MetricaError, DeferredError) as error:
                    raise DeferredError(f"cannot check Metrica before giving up: {error}", retry_after=60) from None
                except AdoptionError as error:
                    at.claim()
                    at.quarantine(str(error))
                    return UploadOutcome.QUARANTINED
                if found is not None:
                    at.claim()
                    at.record(found, "adopted")
                    return UploadOutcome.ADOPTED
            at.claim()
            at.quarantine(f"gave up after repeated failures; last: {last_error}")
            return UploadOutcome.QUARANTINED
