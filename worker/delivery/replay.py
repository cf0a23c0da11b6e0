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
        done = rt.scripts.adopt(
            keys=[rt.keys.batch(batch_id), rt.keys.quarantine(shard), rt.keys.uploaded(shard)],
            args=[batch_id, found.id, found.status, now, who[:64]],
        )
        if not done:
            raise QuarantineError(f"batch {batch_id} changed meanwhile; nothing done")
        log.info("quarantine_adopted", batch_id=batch_id, upload_id=found.id)
        return ReplayResult(batch_id, "adopted", upload_id=found.id)
    prefix = rt.keys.prefix(shard)
    ok, value = rt.scripts.replay(
        keys=[
            rt.keys.batch(batch_id),
            rt.keys.rows(batch_id),
            rt.keys.quarantine(shard),
            rt.keys.sealed(shard),
            rt.keys.done(shard),
            rt.keys.seq(shard),
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
    ok, removed, had = rt.scripts.discard(
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
