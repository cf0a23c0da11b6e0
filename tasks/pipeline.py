"""The pipeline's tasks: drain (periodic), upload one batch, reconcile statuses (periodic)."""

from __future__ import annotations

import random
from typing import Any, cast

import structlog
from celery import Task, shared_task

from worker import dispatch, reconciler, uploader
from worker.app import CalltrackCelery
from worker.drain import drain as drain_streams
from worker.errors import DeferredError, RetryableError
from worker.runtime import Runtime

log = structlog.get_logger(__name__)


def _runtime(task: Task[Any, Any]) -> Runtime:
    return cast(CalltrackCelery, task.app).runtime()


def _send_uploads(batch_ids: list[str]) -> None:
    for batch_id in batch_ids:
        upload_batch.apply_async((batch_id,))


@shared_task(bind=True, name="calltrack.drain", ignore_result=True)
def drain(self: Task[Any, Any], seal_all: bool = False) -> dict[str, int]:
    """Move stream entries into buffers, seal full or due buffers, send their upload tasks."""
    rt = _runtime(self)
    result = drain_streams(rt, seal_all=seal_all)
    _send_uploads(result.sealed)
    overdue = dispatch.overdue_batches(rt)
    if overdue:
        log.warning("uploads_redispatched", batches=len(overdue))
        _send_uploads(overdue)
    return {"read": result.read, "repeats": result.repeats, "sealed": len(result.sealed)}


def backoff(retries: int, *, base: float = 2.0, cap: float = 600.0) -> float:
    """Exponential back-off with full jitter: up to ``base * 2**retries`` seconds, at most ``cap``."""
    return random.uniform(base / 2, min(cap, base * 2**retries))  # noqa: S311


@shared_task(bind=True, name="calltrack.upload_batch", ignore_result=True, max_retries=None)
def upload_batch(self: Task[Any, Any], batch_id: str) -> str:
    """Upload one sealed batch; retried with back-off, then handed to ``give_up``."""
    rt = _runtime(self)
    structlog.contextvars.bind_contextvars(batch_id=batch_id)
    try:
        return uploader.upload_batch(rt, batch_id).value
    except DeferredError as error:
        raise self.retry(countdown=error.retry_after + random.uniform(0, 1)) from None  # noqa: S311
    except RetryableError as error:
        if self.request.retries >= rt.settings.upload_max_retries:
            return uploader.give_up(rt, batch_id, error).value
        raise self.retry(countdown=backoff(self.request.retries)) from None


@shared_task(bind=True, name="calltrack.reconcile", ignore_result=True)
def reconcile(self: Task[Any, Any]) -> dict[str, int]:
    """Copy Metrica's statuses onto uploaded batches until they are final."""
    result = reconciler.reconcile(_runtime(self))
    return {"checked": result.checked, "final": result.final, "short": result.short}
