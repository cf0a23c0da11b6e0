"""Webhook tasks (issue 19): a periodic sweep that records and sends events, and one delivery per event.

``calltrack.notify_webhook`` takes an event id only (the URL and secret are read inside the task) and
runs on its own queue and worker pool (``calltrack.notify``), under a Celery time limit. A failed
delivery is retried by Celery (``self.retry`` with Celery's exponential back-off and full jitter,
capped at ``webhook_backoff_max``); after ``webhook_max_retries`` retries the event is kept as a dead
letter (``ctl notify dead``, the console), never raised into anything else. A refused target (the
SSRF guard) is a dead letter at once: retrying cannot help. While the account's circuit breaker is
open the task sends nothing and spends no retry: the event waits in the outbox until the pause ends.
"""

from __future__ import annotations

from typing import Any, cast

import structlog
from celery import Task, shared_task
from celery.utils.time import get_exponential_backoff_interval

from worker.app import CalltrackCelery
from worker.errors import WebhookError, WebhookRefusedError
from worker.notify import outbox, send
from worker.runtime import Runtime

log = structlog.get_logger(__name__)


def _runtime(task: Task[Any, Any]) -> Runtime:
    return cast(CalltrackCelery, task.app).runtime()


def resend_after(rt: Runtime) -> float:
    """How long a sent event is left alone before the sweep sends it again (its message was lost)."""
    s = rt.settings
    return (s.webhook_max_retries + 1) * (s.webhook_backoff_max + s.webhook_task_time_limit) + outbox.GRACE_SECONDS


@shared_task(bind=True, name="calltrack.notify_sweep", ignore_result=True)
def notify_sweep(self: Task[Any, Any]) -> dict[str, int]:
    """Record new final statuses and held calls of accounts with a webhook; send what is due."""
    rt = _runtime(self)
    recorded = outbox.sweep(rt)
    ids = outbox.due(rt, resend_after=resend_after(rt))
    for event_id in ids:
        try:
            notify_webhook.apply_async((event_id,))
        except Exception as error:
            log.error("webhook_enqueue_failed", event_id=event_id, error=type(error).__name__)
    return {"recorded": recorded, "sent": len(ids)}


# max_retries=None: the limit is webhook_max_retries, counted here (Celery would stop at its default 3).
@shared_task(bind=True, name="calltrack.notify_webhook", ignore_result=True, acks_late=True, max_retries=None)
def notify_webhook(self: Task[Any, Any], event_id: str) -> str:
    rt = _runtime(self)
    try:
        return send.deliver(rt, event_id)
    except WebhookError as error:
        return _failed(self, rt, event_id, error)


def _failed(task: Task[Any, Any], rt: Runtime, event_id: str, error: WebhookError) -> str:
    """Retry with back-off, or keep the event as a dead letter (at once when its target is refused)."""
    retries = int(task.request.retries or 0)
    if retries >= rt.settings.webhook_max_retries or isinstance(error, WebhookRefusedError):
        event = outbox.load(rt, event_id)
        if event is not None:
            outbox.dead(rt, event, str(error), retries + 1)
        return "dead"
    countdown = get_exponential_backoff_interval(
        factor=1, retries=retries, maximum=rt.settings.webhook_backoff_max, full_jitter=True
    )
    outbox.postpone(rt, event_id, countdown)
    log.warning("webhook_retry", event_id=event_id, retries=retries + 1, countdown=countdown, error=str(error))
    raise task.retry(countdown=countdown, exc=error) from None
