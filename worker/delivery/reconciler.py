"""Reconcile: copy Metrica's status onto every uploaded batch until it is final.

One list request per (counter, kind) covers all of that counter's open uploads, rather than one
status request per upload; an upload missing from the list is asked for by id. A counter whose
statuses did not move is checked less often (doubling up to ``reconcile_max_backoff``). A final
status (``PROCESSED`` or ``LINKAGE_FAILURE``) closes the batch and records ``source_quantity`` and
``line_quantity`` (``rejected_lines`` when Metrica kept fewer lines than it received). An upload not
final after ``final_status_timeout`` is flagged ``overdue``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import structlog
from pydantic import SecretStr
from redis.exceptions import OutOfMemoryError

from worker.dataplane.ids import fingerprint
from worker.delivery import retention
from worker.delivery.metrica import LIST_PAGE, Uploading
from worker.delivery.quota import Purpose, QuotaGate
from worker.delivery.uploader import clock_ms
from worker.errors import DeferredError, MetricaError, NotFoundError
from worker.failpoints import failpoint
from worker.model.kinds import Bucket, KindSpec

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)
MAX_OPEN_PER_RUN = 10_000


@dataclass(slots=True)
class ReconcileResult:
    """Totals of one reconciliation run."""

    checked: int = 0
    final: int = 0
    short: int = 0  # final batches of which Metrica kept fewer lines than it received
    overdue: int = 0
    skipped_counters: int = 0  # backing off, no quota, or a failed request
    missing: int = 0  # quarantined: Metrica no longer knows their upload (missing_at_metrica)
    another_run: bool = False  # another reconcile held the fleet-wide lock: this one did nothing


@dataclass(slots=True)
class OpenUpload:
    batch_id: str
    uploaded_at: int
    overdue: bool


def _open_uploads(rt: Runtime, shard: int, now: int) -> dict[tuple[int, KindSpec], dict[int, OpenUpload]]:
    """(counter, kind) -> {upload id: open upload} for the shard's batches whose status is not final,
    uploaded at least ``reconcile_first_poll_seconds`` ago (Metrica needs minutes for a file)."""
    groups: dict[tuple[int, KindSpec], dict[int, OpenUpload]] = defaultdict(dict)
    cutoff = now - int(rt.settings.reconcile_first_poll_seconds * 1000)
    batch_ids = cast(
        list[str], rt.redis.zrangebyscore(rt.keys.uploaded(shard), "-inf", cutoff, start=0, num=MAX_OPEN_PER_RUN)
    )
    if not batch_ids:
        return groups
    pipe = rt.redis.pipeline(transaction=False)
    for batch_id in batch_ids:
        pipe.hmget(rt.keys.batch(batch_id), ["bucket", "upload_id", "uploaded_at", "overdue"])
    for batch_id, (bucket, upload_id, uploaded_at, overdue) in zip(batch_ids, pipe.execute(), strict=True):
        if bucket and upload_id:
            b = Bucket.decode(bucket)
            groups[(b.counter_id, b.spec)][int(upload_id)] = OpenUpload(batch_id, int(uploaded_at or 0), bool(overdue))
    return groups


def _token(rt: Runtime, counter: int, uploads: dict[int, OpenUpload]) -> SecretStr | None:
    """The counter's token; for a counter gone from the registry, the token its batches were posted
    with (their ``token_fp``) while the registry or the environment still holds it. Never another."""
    token = rt.accounts.token_for(counter, removed_ok=True)
    if token is not None:
        return token
    pipe = rt.redis.pipeline(transaction=False)
    for upload in uploads.values():
        pipe.hget(rt.keys.batch(upload.batch_id), "token_fp")
    posted_with = {fp for fp in pipe.execute() if fp}
    return next((t for t in rt.accounts.tokens() if fingerprint(t) in posted_with), None)


def _statuses(
    rt: Runtime, gate: QuotaGate, spec: KindSpec, counter: int, wanted: set[int], token: SecretStr
) -> tuple[dict[int, Uploading], set[int]]:
    """The uploads Metrica reports, and the ids it answered 404 for."""
    found: dict[int, Uploading] = {}
    missing: set[int] = set()
    offset = 0
    while wanted - found.keys():
        with gate.permit(token, Purpose.POLL):
            page = rt.metrica.uploadings(spec, counter, token, limit=LIST_PAGE, offset=offset)
        found.update((u.id, u) for u in page if u.id in wanted)
        if len(page) < LIST_PAGE:
            break
        offset += len(page)
    for upload_id in sorted(wanted - found.keys()):
        try:
            with gate.permit(token, Purpose.POLL):
                found[upload_id] = rt.metrica.uploading(spec, counter, token, upload_id)
        except NotFoundError:
            log.error("upload_missing_at_metrica", upload_id=upload_id)
            missing.add(upload_id)
    return found, missing


def reconcile(rt: Runtime, gate: QuotaGate | None = None) -> ReconcileResult:
    """Poll every counter with open uploads that is due for a check, and record what changed.

    One run at a time fleet-wide: a run that finds the reconcile lock held does nothing.
    """
    gate = gate or QuotaGate(rt)
    result = ReconcileResult()
    holder = uuid.uuid4().hex
    # Released when the run ends; the lease only matters when a run was killed (then the next run
    # waits it out): long enough for a run's requests, short enough not to stall reconciliation.
    s = rt.settings
    one_request = s.http_connect_timeout + s.http_read_timeout + s.http_write_timeout
    lease_ms = int(max(s.reconcile_interval * 3, one_request * 2) * 1000)
    if not int(rt.scripts.take_lock(keys=[rt.keys.reconcile_lock], args=[holder, lease_ms])):
        result.another_run = True
        return result
    try:
        _reconcile(rt, gate, result)
        retention.sweep_step(rt)  # what an earlier release left without a TTL (worker/delivery/retention.py)
    finally:
        rt.scripts.release_lock(keys=[rt.keys.reconcile_lock], args=[holder])
    return result


def _reconcile(rt: Runtime, gate: QuotaGate, result: ReconcileResult) -> None:
    for shard in range(rt.keys.shards):
        now = clock_ms(rt)
        groups = _open_uploads(rt, shard, now)
        if not groups:
            continue
        schedule = cast(dict[str, str], rt.redis.hgetall(rt.keys.recheck(shard)))
        for (counter, spec), uploads in groups.items():
            field = f"{counter}:{spec.kind.value}"
            next_ms, interval = _parse_schedule(schedule.get(field), rt.settings.reconcile_interval)
            if next_ms > now:
                result.skipped_counters += 1
                continue
            with structlog.contextvars.bound_contextvars(counter_id=counter):
                token = _token(rt, counter, uploads)
                if token is None:
                    result.skipped_counters += 1
                    if counter in rt.accounts.snapshot().removed:
                        _orphaned(rt, shard, uploads, result)
                    continue
                try:
                    statuses, missing = _statuses(rt, gate, spec, counter, set(uploads), token)
                except (MetricaError, DeferredError) as error:
                    result.skipped_counters += 1
                    log.warning("reconcile_failed", error=str(error))
                    continue
                failpoint("during_reconcile")
                moved = _apply(rt, shard, counter, spec.kind.value, uploads, statuses, result, missing)
            # A moving status halves the pause (not back to the base at once: a busy counter would
            # be polled every reconcile_interval all day); no move doubles it.
            base, cap = rt.settings.reconcile_interval, rt.settings.reconcile_max_backoff
            interval = max(base, interval / 2) if moved else min(interval * 2, cap)
            with contextlib.suppress(OutOfMemoryError):  # Redis full: the back-off is only a hint
                rt.redis.hset(rt.keys.recheck(shard), field, f"{clock_ms(rt) + int(interval * 1000)}:{interval}")


def _parse_schedule(raw: str | None, base: float) -> tuple[int, float]:
    if not raw:
        return 0, base
    next_ms, _, interval = raw.partition(":")
    return int(next_ms), float(interval or base)


def _apply(
    rt: Runtime,
    shard: int,
    counter: int,
    kind: str,
    uploads: dict[int, OpenUpload],
    statuses: dict[int, Uploading],
    result: ReconcileResult,
    missing: set[int],
) -> bool:
    moved = False
    timeout_ms = int(rt.settings.final_status_timeout * 1000)
    now = clock_ms(rt)
    for upload_id, open_upload in uploads.items():
        batch_id = open_upload.batch_id
        uploading = statuses.get(upload_id)
        if uploading is None:
            if upload_id in missing:
                _missing(rt, shard, batch_id, upload_id, "Metrica answers 404 for its upload", result)
            continue
        if uploading.comment and uploading.comment != batch_id:
            # The id belongs to another file: never copy its status onto this batch.
            log.error("upload_comment_mismatch", batch_id=batch_id, upload_id=upload_id)
            _missing(rt, shard, batch_id, upload_id, f"its upload carries comment {uploading.comment[:64]}", result)
            continue
        result.checked += 1
        previous = rt.redis.hget(rt.keys.batch(batch_id), "status")
        moved |= previous != uploading.status
        if _record(rt, shard, batch_id, uploading, kind):
            result.final += 1
            if (uploading.line_quantity or 0) < (uploading.source_quantity or 0):
                result.short += 1
                refused = (uploading.source_quantity or 0) - (uploading.line_quantity or 0)
                rt.metrics.incr("rows_refused", kind, str(counter), amount=refused)
                log.warning(
                    "upload_lines_rejected",
                    batch_id=batch_id,
                    source_quantity=uploading.source_quantity,
                    line_quantity=uploading.line_quantity,
                )
        elif not open_upload.overdue and now - open_upload.uploaded_at > timeout_ms:
            rt.redis.hset(rt.keys.batch(batch_id), "overdue", 1)
            result.overdue += 1
            log.error("upload_not_final_in_time", batch_id=batch_id, status=uploading.status, upload_id=upload_id)
    return moved


def _missing(rt: Runtime, shard: int, batch_id: str, upload_id: int, why: str, result: ReconcileResult) -> None:
    """One more "not found"; after ``reconcile_missing_limit`` in a row the batch is quarantined."""
    limit = rt.settings.reconcile_missing_limit
    reason = f"missing_at_metrica: upload {upload_id} not found {limit} times in a row ({why}); replay looks it up"
    misses, quarantined = rt.scripts.mark_missing(
        keys=[rt.keys.batch(batch_id), rt.keys.uploaded(shard), rt.keys.quarantine(shard)],
        args=[batch_id, upload_id, limit, reason],
    )
    log.warning("upload_not_found", batch_id=batch_id, upload_id=upload_id, misses=int(misses), limit=limit)
    if int(quarantined):
        result.missing += 1
        log.error("batch_quarantined", batch_id=batch_id, reason=reason)
        rt.metrics.incr("batches_quarantined", "missing_at_metrica")


def _orphaned(rt: Runtime, shard: int, uploads: dict[int, OpenUpload], result: ReconcileResult) -> None:
    """A removed counter whose batches' token is gone too: nothing may ask Metrica for them (never with
    another account's token), so they are quarantined with the reason; replay can send them again."""
    reason = "counter_removed: the counter left the account registry and the token its upload was posted with is gone"
    for upload_id, upload in uploads.items():
        _, quarantined = rt.scripts.mark_missing(
            keys=[rt.keys.batch(upload.batch_id), rt.keys.uploaded(shard), rt.keys.quarantine(shard)],
            args=[upload.batch_id, upload_id, 1, reason],
        )
        if int(quarantined):
            result.missing += 1
            log.error("batch_quarantined", batch_id=upload.batch_id, reason=reason)
            rt.metrics.incr("batches_quarantined", "counter_removed")


def _record(rt: Runtime, shard: int, batch_id: str, uploading: Uploading, kind: str) -> bool:
    final = rt.scripts.record_status(
        keys=[
            rt.keys.batch(batch_id),
            rt.keys.rows(batch_id),
            rt.keys.uploaded(shard),
            rt.keys.done(shard),
            rt.keys.marks(batch_id),
        ],
        args=[
            batch_id,
            uploading.id,
            uploading.status,
            "" if uploading.source_quantity is None else uploading.source_quantity,
            "" if uploading.line_quantity is None else uploading.line_quantity,
            "",
            rt.settings.rows_retention_seconds,
            rt.settings.record_retention_seconds,
        ],
    )
    if final:
        log.info("batch_final", batch_id=batch_id, status=uploading.status, upload_id=uploading.id)
        rt.metrics.incr("batches_final", kind, uploading.status)
    return bool(final)
