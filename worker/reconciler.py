"""Reconcile: copy Metrica's status onto every uploaded batch until it is final.

One list request per (counter, kind) covers all of that counter's open uploads, rather than one
status request per upload; an upload missing from the list is asked for by id. A final status
(``PROCESSED`` or ``LINKAGE_FAILURE``) closes the batch and records ``source_quantity`` and
``line_quantity``; a file of which Metrica kept fewer lines than it received is logged.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import cast

import structlog

from worker.errors import MetricaError, NotFoundError
from worker.kinds import Bucket
from worker.metrica import LIST_PAGE, Uploading
from worker.runtime import Runtime
from worker.uploader import now_ms

log = structlog.get_logger(__name__)
MAX_OPEN_PER_RUN = 10_000


@dataclass(slots=True)
class ReconcileResult:
    """Totals of one reconciliation run."""

    checked: int = 0
    final: int = 0
    short: int = 0  # final batches of which Metrica kept fewer lines than it received
    failed_counters: int = 0


def _open_uploads(rt: Runtime) -> dict[tuple[int, Bucket], dict[int, str]]:
    """(shard, bucket) -> {upload id: batch id} for every batch whose status is not final."""
    groups: dict[tuple[int, Bucket], dict[int, str]] = defaultdict(dict)
    for shard in range(rt.keys.shards):
        batch_ids = cast(list[str], rt.redis.zrange(rt.keys.uploaded(shard), 0, MAX_OPEN_PER_RUN - 1))
        if not batch_ids:
            continue
        pipe = rt.redis.pipeline(transaction=False)
        for batch_id in batch_ids:
            pipe.hmget(rt.keys.batch(batch_id), "bucket", "upload_id")
        for batch_id, (bucket, upload_id) in zip(batch_ids, pipe.execute(), strict=True):
            if bucket and upload_id:
                groups[(shard, Bucket.decode(bucket))][int(upload_id)] = batch_id
    return groups


def _statuses(rt: Runtime, bucket: Bucket, wanted: set[int]) -> dict[int, Uploading]:
    token = rt.settings.token_for(bucket.counter_id)
    if token is None:
        return {}
    found: dict[int, Uploading] = {}
    offset = 0
    while wanted - found.keys():
        page = rt.metrica.uploadings(bucket.spec, bucket.counter_id, token, limit=LIST_PAGE, offset=offset)
        found.update((u.id, u) for u in page if u.id in wanted)
        if len(page) < LIST_PAGE:
            break
        offset += len(page)
    for upload_id in sorted(wanted - found.keys()):
        try:
            found[upload_id] = rt.metrica.uploading(bucket.spec, bucket.counter_id, token, upload_id)
        except NotFoundError:
            log.error("upload_missing_at_metrica", upload_id=upload_id)
    return found


def reconcile(rt: Runtime) -> ReconcileResult:
    """Poll every counter with open uploads once and record what changed."""
    result = ReconcileResult()
    seen_lists: dict[tuple[int, str], dict[int, Uploading]] = {}
    for (shard, bucket), uploads in _open_uploads(rt).items():
        with structlog.contextvars.bound_contextvars(counter_id=bucket.counter_id):
            try:
                cache_key = (bucket.counter_id, bucket.kind.value)
                statuses = seen_lists.get(cache_key)
                if statuses is None or set(uploads) - statuses.keys():
                    statuses = {**(statuses or {}), **_statuses(rt, bucket, set(uploads))}
                    seen_lists[cache_key] = statuses
            except MetricaError as error:
                result.failed_counters += 1
                log.warning("reconcile_failed", error=str(error))
                continue
            for upload_id, batch_id in uploads.items():
                uploading = statuses.get(upload_id)
                if uploading is None:
                    continue
                if uploading.comment and uploading.comment != batch_id:
                    # The id belongs to another file: never copy its status onto this batch.
                    log.error("upload_comment_mismatch", batch_id=batch_id, upload_id=upload_id)
                    continue
                result.checked += 1
                if _record(rt, shard, batch_id, uploading):
                    result.final += 1
                    if (
                        uploading.line_quantity is not None
                        and uploading.source_quantity is not None
                        and uploading.line_quantity < uploading.source_quantity
                    ):
                        result.short += 1
                        log.warning(
                            "upload_lines_rejected",
                            batch_id=batch_id,
                            source_quantity=uploading.source_quantity,
                            line_quantity=uploading.line_quantity,
                        )
    return result


def _record(rt: Runtime, shard: int, batch_id: str, uploading: Uploading) -> bool:
    final = rt.scripts.record_status(
        keys=[
            rt.keys.batch(batch_id),
            rt.keys.rows(batch_id),
            rt.keys.uploaded(shard),
            rt.keys.done(shard),
        ],
        args=[
            batch_id,
            uploading.id,
            uploading.status,
            "" if uploading.source_quantity is None else uploading.source_quantity,
            "" if uploading.line_quantity is None else uploading.line_quantity,
            now_ms(),
            rt.settings.rows_retention_seconds,
        ],
    )
    if final:
        log.info("batch_final", batch_id=batch_id, status=uploading.status, upload_id=uploading.id)
    return bool(final)
