"""The account registry's periodic task: refresh tokens before they expire (or once Metrica refused them)."""

from __future__ import annotations

from typing import Any, cast

from celery import Task, shared_task

from worker.accounts.upkeep import upkeep
from worker.app import CalltrackCelery


@shared_task(bind=True, name="calltrack.token_upkeep", ignore_result=True)
def token_upkeep(self: Task[Any, Any]) -> dict[str, int]:
    """Refresh every due token that has a refresh token; the registry's version tells every worker."""
    result = upkeep(cast(CalltrackCelery, self.app).runtime().accounts)
    return {"refreshed": result.refreshed, "failed": result.failed}
