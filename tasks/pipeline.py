"""The pipeline's tasks: drain (periodic), upload one batch, reconcile statuses (periodic)."""

from __future__ import annotations

import random
from typing import Any, cast

import structlog
from celery import Task, shared_task
from celery.exceptions import Retry

from tasks.setup import counter_setup as setup_task
from worker.app import CalltrackCelery
from worker.delivery import counter_setup, dispatch, reconciler, uploader
from worker.delivery.drain import drain as drain_streams
from worker.delivery.drain import update_holds
from worker.delivery.quota import QuotaExhausted, QuotaGate, UploadsPaused
from worker.errors import (
    CounterRemovedError,
    DeferredError,
    JoinWindowClosed,
    QuotaError,
    RestoreHeldError,
    TokenUnreadableError,
)
from worker.failpoints import failpoint
from worker.intake.service import build_intake
from worker.runtime import Runtime

log = structlog.get_logger(__name__)
# Waits longer than this leave Celery's countdown for the sweeper (see worker.delivery.dispatch.park).
LONG_WAIT_SECONDS = 60.0


def _runtime(task: Task[Any, Any]) -> Runtime:
    return cast(CalltrackCelery, task.app).runtime()


def _send_uploads(rt: Runtime, batch_ids: list[str]) -> None:
    """One upload task per batch, each client's first batch ahead of its later ones (dispatch.fair_priorities)."""
    for batch_id, priority in dispatch.fair_priorities(rt, batch_ids):
        upload_batch.apply_async((batch_id,), priority=priority)


@shared_task(bind=True, name="calltrack.drain", ignore_result=True)
def drain(self: Task[Any, Any], seal_all: bool = False) -> dict[str, int]:
    """Move stream entries into buffers, seal full or due buffers, send their upload tasks."""
    rt = _runtime(self)
    update_holds(rt, QuotaGate(rt))
    result = drain_streams(rt, seal_all=seal_all)
    rt.metrics.add(
        {
            ("calls_drained", ()): result.read,
            ("calls_deduplicated", ()): result.repeats,
            ("batches_sealed", ()): len(result.sealed),
        }
    )
    failpoint("after_seal_before_dispatch")
    _send_uploads(rt, result.sealed)
    if dispatch.resume_due(rt):
        dispatch.resume_readable(rt)  # batches that waited for an unreadable token, now readable here
    overdue = dispatch.overdue_batches(rt)
    if overdue:
        log.warning("uploads_redispatched", batches=len(overdue))
        _send_uploads(rt, overdue)
    return {"read": result.read, "repeats": result.repeats, "sealed": len(result.sealed)}


def backoff(failures: int, *, base: float = 2.0, cap: float = 600.0) -> float:
    """Exponential back-off with full jitter: up to ``base * 2**failures`` seconds, at most ``cap``."""
    return random.uniform(base / 2, min(cap, base * 2 ** max(failures - 1, 0)))  # noqa: S311


def _park_reason(error: Exception) -> str:
    """A code word for the parked_batches gauge: why the batch waits."""
    if isinstance(error, QuotaExhausted):
        return f"quota_{error.quota}"
    if isinstance(error, UploadsPaused):
        return "token_paused"
    if isinstance(error, TokenUnreadableError):
        return "token_unreadable"
    if isinstance(error, CounterRemovedError):
        return "counter_removed"
    if isinstance(error, JoinWindowClosed):
        return "join_window"
    if isinstance(error, RestoreHeldError):
        return "restore_held"
    if isinstance(error, QuotaError):
        return f"metrica_{error.error_type or 'quota'}"
    if isinstance(error, uploader.UploadFailed):
        return "retry_backoff"
    return "deferred"


def _wait(task: Task[Any, Any], rt: Runtime, batch_id: str, seconds: float, why: Exception | None = None) -> str:
    if seconds > LONG_WAIT_SECONDS:
        dispatch.park(rt, batch_id, seconds, _park_reason(why) if why is not None else "deferred")
        return "parked"
    raise task.retry(countdown=seconds + random.uniform(0, 0.5))  # noqa: S311


@shared_task(bind=True, name="calltrack.upload_batch", ignore_result=True, max_retries=None)
def upload_batch(self: Task[Any, Any], batch_id: str) -> str:
    """Upload one sealed batch; failures back off per the batch's own count, then ``give_up``."""
    rt = _runtime(self)
    structlog.contextvars.bind_contextvars(batch_id=batch_id)
    try:
        outcome = _upload(self, rt, batch_id)
    except Retry:
        rt.metrics.incr("upload_tasks", "retry")
        raise
    rt.metrics.incr("upload_tasks", outcome)
    return outcome


def _request_setup(rt: Runtime, batch_id: str) -> None:
    """Send the counter's setup task when it is due; the upload never waits for it (issue 24)."""
    loaded = uploader.load(rt, batch_id)
    if loaded is None or loaded[1]["state"] not in ("SEALED", "UPLOADING"):
        return
    bucket = loaded[0].bucket
    targets = counter_setup.due(rt, bucket, batch_id)
    if targets is not None:
        setup_task.apply_async((bucket.counter_id, targets))


def _upload(self: Task[Any, Any], rt: Runtime, batch_id: str) -> str:
    try:
        _request_setup(rt, batch_id)
        return uploader.upload_batch(rt, batch_id).value
    except DeferredError as error:
        log.info("upload_deferred", reason=str(error), wait=round(error.retry_after, 2))
        return _wait(self, rt, batch_id, error.retry_after, error)
    except QuotaError as error:
        # Metrica's own quota answer: wait by quota type.
        if error.error_type == "quota_requests_by_uid":
            loaded = uploader.load(rt, batch_id)
            token = rt.accounts.token_for(loaded[0].bucket.counter_id, removed_ok=True) if loaded else None
            wait = QuotaGate(rt).exhaust_day(token) if token is not None else 3600.0
        else:
            wait = 1.0 + random.uniform(0, 1)  # noqa: S311
        log.warning("metrica_quota_answer", quota=error.error_type, wait=round(wait, 1))
        return _wait(self, rt, batch_id, wait, error)
    except uploader.UploadFailed as failed:
        # The window runs from the batch's first failure (not its sealing: a batch parked for hours
        # until the quota resets gets its retries), measured by Redis's clock.
        if (
            failed.failures >= rt.settings.upload_max_retries
            or failed.failing_for > rt.settings.upload_max_retry_seconds
        ):
            try:
                return uploader.give_up(rt, batch_id, failed.error).value
            except DeferredError as error:
                return _wait(self, rt, batch_id, error.retry_after, error)
        return _wait(self, rt, batch_id, backoff(failed.failures), failed)


def expire_held(rt: Runtime, *, now_ms: int | None = None) -> int:
    """Delete held calls older than ``held_retention_days`` (each reconcile tick) and count them."""
    days = rt.settings.held_retention_days
    expired = build_intake(rt).held.expire(days, now_ms=now_ms)
    if expired:
        rt.metrics.incr("held_expired", amount=expired)
        log.info("held_expired", expired=expired, retention_days=days)
    return expired


@shared_task(bind=True, name="calltrack.reconcile", ignore_result=True)
def reconcile(self: Task[Any, Any]) -> dict[str, int]:
    """Copy Metrica's statuses onto uploaded batches until they are final."""
    rt = _runtime(self)
    result = reconciler.reconcile(rt)
    expire_held(rt)
    return {"checked": result.checked, "final": result.final, "short": result.short, "overdue": result.overdue}
