"""A circuit breaker per account: one client's dead receiver costs that client's deliveries only.

After ``webhook_breaker_failures`` consecutive failed deliveries to an account's receiver its breaker
opens: the account's events wait (in the outbox, no worker time, no retry spent) for
``webhook_breaker_seconds``; then one delivery is let through as a probe (half-open). A success
closes the breaker; a failure opens it for another pause. Other accounts' deliveries never look at
it. The state lives in one Redis hash (``Keys.notify("breaker")``), changed by
``lua/notify_breaker.lua`` in one step each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import structlog

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Verdict:
    state: str  # "closed", "open" or "probe"
    until_ms: int = 0  # when open: the time to look again


def _run(rt: Runtime, op: str, account: str) -> tuple[str, int]:
    s = rt.settings
    probe_ms = s.webhook_task_time_limit * 1000
    pause_ms = int(s.webhook_breaker_seconds * 1000)
    args: list[str | int] = [op, account, int(time.time() * 1000), s.webhook_breaker_failures, pause_ms, probe_ms]
    answer = rt.scripts.notify_breaker(keys=[rt.keys.notify("breaker")], args=args)
    state, value = cast(list[bytes | str | int], answer)
    return (state.decode() if isinstance(state, bytes) else str(state)), int(value)


def allow(rt: Runtime, account: str) -> Verdict:
    """May a delivery of ``account`` run now? ``open`` says until when it may not."""
    state, until = _run(rt, "allow", account)
    return Verdict(state, until)


def succeeded(rt: Runtime, account: str) -> None:
    _, before = _run(rt, "ok", account)
    if before:
        log.info("webhook_breaker_closed", account=account, failures_before=before)


def failed(rt: Runtime, account: str) -> Verdict:
    """Count a failure; ``open`` when this one opened the breaker (again)."""
    state, value = _run(rt, "fail", account)
    if state == "open":
        rt.metrics.incr("webhook_breaker_opened")
        log.warning("webhook_breaker_open", account=account, until_ms=value)
        return Verdict("open", value)
    return Verdict("closed")


def states(rt: Runtime) -> dict[str, dict[str, int | str]]:
    """Every account with a breaker record: failures, state (closed, open, half-open) and the pause's end."""
    raw = cast(dict[str, str], rt.redis.hgetall(rt.keys.notify("breaker")))
    now = int(time.time() * 1000)
    found: dict[str, dict[str, int]] = {}
    for name, value in raw.items():
        account, _, field = name.rpartition(":")
        found.setdefault(account, {})[field] = int(value)
    shown: dict[str, dict[str, int | str]] = {}
    for account, fields in sorted(found.items()):
        open_ms = fields.get("open", 0)
        state = "closed" if not open_ms else ("open" if now < open_ms else "half-open")
        shown[account] = {"failures": fields.get("failures", 0), "state": state, "open_until_ms": open_ms}
    return shown


def reset(rt: Runtime, account: str) -> bool:
    """Close an account's breaker by hand (``ctl notify reset``); True when it had a record."""
    fields = [f"{account}:{name}" for name in ("failures", "open", "probe")]
    return bool(rt.redis.hdel(rt.keys.notify("breaker"), *fields))
