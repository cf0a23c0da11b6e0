"""Counter setup in its own task, with its own deadline: never inside an upload's time limit."""

from __future__ import annotations

from typing import Any, cast

import structlog
from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from worker.app import CalltrackCelery
from worker.delivery import counter_setup as setup

log = structlog.get_logger(__name__)


@shared_task(bind=True, name="calltrack.counter_setup", ignore_result=True)
def counter_setup(self: Task[Any, Any], counter_id: int, targets: list[str]) -> str:
    """Set one counter up (worker/delivery/counter_setup.py); a failure or a time-out is recorded with its
    reason, and the next upload of the counter asks again after an hour."""
    rt = cast(CalltrackCelery, self.app).runtime()
    deadline = rt.settings.counter_setup_deadline_seconds
    try:
        found = setup.setup_counter(rt, counter_id, targets, deadline=deadline)
    except SoftTimeLimitExceeded:  # the backstop of a prefork pool: one request hung past the deadline
        setup.record_failure(rt, counter_id, f"it ran past its deadline of {deadline} s")
        return "timed_out"
    finally:
        setup.done(rt, counter_id)
    return "ready" if found.ready else "not_ready"
