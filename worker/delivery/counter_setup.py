"""Counter setup: what a counter needs before its uploads can join visits, checked and switched on.

A delivered file is not an attributed one. Metrica joins calls and conversions to visits beyond 16
hours only with the counter's extended-window options on (the window "grows gradually" from the day
they are switched on), and joins a conversion only to a JavaScript-event goal whose identifier is its
``Target``. Today's counter object carries no option state; the reference documents only the switches
(``POST .../calls_extended_threshold``, ``.../extended_threshold``) and the join thresholds (``GET
.../calls_visit_join_threshold``, ``.../visit_join_threshold``: the date from which data joins). So
:func:`setup_counter` reads the thresholds, switches each option on at most once per counter (the
moment is recorded at once, and a later run never posts it again), reuses goals that exist and creates
missing ones (``counter_setup=apply``), or only reports (``check``). The record lives in
``<ns>:counter_setup`` for ``ctl counters setup``, ``ctl doctor`` and ``/metrics``.

Setup runs in its own task (``calltrack.counter_setup``, its own deadline), never inside an upload:
:func:`due` claims a counter whose setup is missing, failed an hour ago or lacks a goal, and the task
layer sends the task. :func:`hold` is what the upload asks: a counter whose option this worker
switched on less than ``counter_join_wait_seconds`` ago keeps its data (``counter_join_wait=hold``),
or uploads it with a warning (``warn``), as the reference advises uploading about a day after.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, cast

import orjson
import structlog
from pydantic import SecretStr
from redis.exceptions import RedisError

from worker.delivery.csvfile import row_cells
from worker.delivery.quota import Purpose, QuotaGate
from worker.errors import DeferredError, JoinWindowClosed, MetricaError
from worker.model.kinds import Bucket, UploadKind

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)
RETRY_AFTER_MS = 3_600_000
PENDING_PREFIX = "pending:"  # a field of the counter_setup hash: a setup task was sent at <ms>
_COUNTER = "/management/v1/counter/{counter}"
_OFFLINE = _COUNTER + "/offline_conversions"
CALLS_OPTION = "offline_calls_extended_threshold"
CONVERSIONS_OPTION = "offline_conversion_extended_threshold"
#: option -> (the request that switches it on, the request that answers its join threshold, kind name)
_OPTIONS = {
    CALLS_OPTION: (_OFFLINE + "/calls_extended_threshold", _OFFLINE + "/calls_visit_join_threshold", "calls"),
    CONVERSIONS_OPTION: (_OFFLINE + "/extended_threshold", _OFFLINE + "/visit_join_threshold", "conversions"),
}


def option_of(kind: UploadKind) -> str:
    """The option whose window a kind's rows join in (chats: the conversions one)."""
    return CALLS_OPTION if kind is UploadKind.CALLS else CONVERSIONS_OPTION


@dataclass(slots=True)
class Readiness:
    """What a counter's last setup found and did."""

    counter_id: int
    checked_at: int = 0
    options: dict[str, bool] = field(default_factory=dict)  # on: switched on (by this worker) at enabled_at
    enabled_at: dict[str, int] = field(default_factory=dict)  # option -> ms its switch was answered
    join_from: dict[str, str] = field(default_factory=dict)  # calls / conversions -> Metrica's date
    goals: list[str] = field(default_factory=list)  # conversion targets that have a goal
    switched_on: list[str] = field(default_factory=list)  # by this run
    goals_created: list[str] = field(default_factory=list)
    missing_goals: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ready(self) -> bool:
        return not self.error and all(self.options.get(name) for name in _OPTIONS) and not self.missing_goals

    def problems(self) -> list[str]:
        # Metrica shows no option state (the counter object lost offline_options): what the worker knows
        # is whether it switched the option on itself.
        found = [f"{name} was never switched on by this worker" for name in _OPTIONS if not self.options.get(name)]
        found += [f"no goal for Target {target!r}" for target in self.missing_goals]
        return [self.error] if self.error else found

    def window_opens_at(self, option: str, wait_ms: int) -> int:
        """When data of ``option`` may go (0: no wait recorded): the switch moment plus the wait."""
        at = self.enabled_at.get(option, 0)
        return at + wait_ms if at else 0

    def to_json(self) -> bytes:
        return orjson.dumps({**asdict(self), "ready": self.ready})

    @classmethod
    def from_json(cls, data: str | bytes) -> Readiness:
        raw = orjson.loads(data)
        known = {name: raw[name] for name in cls.__dataclass_fields__ if name in raw}
        found = cls(**known)
        if "enabled_at" not in raw:
            # A record of before issue 24 read ``offline_options`` (always off: the field is gone) and
            # posted the switches on every run: a switch it made counts as made at its check.
            found.options = {}
            found.enabled_at = {name: found.checked_at for name in found.switched_on if name in _OPTIONS}
            found.options = {name: True for name in found.enabled_at}
        return found


def _now_ms() -> int:
    return int(time.time() * 1000)


def readiness(rt: Runtime, counters: Iterable[int] | None = None) -> dict[int, Readiness]:
    """The recorded readiness of ``counters`` (every recorded counter when None)."""
    if counters is None:
        raw = cast(dict[str, str], rt.redis.hgetall(rt.keys.counter_setup))
        return {int(k): Readiness.from_json(v) for k, v in raw.items() if not k.startswith(PENDING_PREFIX)}
    wanted = list(counters)
    values = cast(list[str | None], rt.redis.hmget(rt.keys.counter_setup, [str(c) for c in wanted])) if wanted else []
    return {c: Readiness.from_json(v) for c, v in zip(wanted, values, strict=True) if v}


def _save(rt: Runtime, result: Readiness) -> None:
    try:
        rt.redis.hset(rt.keys.counter_setup, str(result.counter_id), result.to_json())
    except RedisError as error:  # a full Redis (OOM): the next run reads Metrica again
        log.warning("counter_setup_not_recorded", counter_id=result.counter_id, error=type(error).__name__)


def setup_counter(
    rt: Runtime,
    counter_id: int,
    targets: Iterable[str] = (),
    *,
    apply: bool | None = None,
    gate: QuotaGate | None = None,
    deadline: float | None = None,
) -> Readiness:
    """Read the counter's join thresholds and goals; with ``apply`` switch on the options this worker
    never switched on and create the goals ``targets`` need. Records and returns the result; Metrica
    errors, and running past ``deadline`` seconds, land in ``error``."""
    apply = rt.settings.counter_setup == "apply" if apply is None else apply
    token = rt.accounts.token_for(counter_id, removed_ok=True)
    result = Readiness(counter_id, checked_at=_now_ms())
    previous = readiness(rt, [counter_id]).get(counter_id)
    if previous is not None:  # switches made and goals found earlier stay known
        result.enabled_at = dict(previous.enabled_at)
        result.options = {name: True for name in result.enabled_at}
        result.goals = list(previous.goals)
    if token is None:
        result.error = f"no OAuth token is configured for counter {counter_id}"
    else:
        try:
            ends = time.monotonic() + deadline if deadline is not None else None
            _inspect(rt, gate or QuotaGate(rt), token, result, sorted(set(targets)), apply, ends)
        except (MetricaError, DeferredError) as error:
            result.error = f"counter setup failed: {error}"
            log.warning("counter_setup_failed", counter_id=counter_id, error=str(error))
    _save(rt, result)
    log.info("counter_setup", counter_id=counter_id, ready=result.ready, problems=result.problems())
    return result


def record_failure(rt: Runtime, counter_id: int, reason: str) -> None:
    """A setup that ended without its own record (its deadline killed it): keep the reason, try later."""
    found = readiness(rt, [counter_id]).get(counter_id) or Readiness(counter_id)
    found.checked_at, found.error = _now_ms(), f"counter setup failed: {reason}"[:500]
    _save(rt, found)
    log.warning("counter_setup_failed", counter_id=counter_id, error=reason)


def _targets(rt: Runtime, bucket: Bucket, batch_id: str) -> set[str]:
    targets: set[str] = set()
    if bucket.kind is UploadKind.CONVERSIONS:
        for row in cast(list[str], rt.redis.lrange(rt.keys.rows(batch_id), 0, -1)):
            target = row_cells(bucket.spec, bucket.id_type, row).get("Target")
            if isinstance(target, str):
                targets.add(target)
    return targets


def due(rt: Runtime, bucket: Bucket, batch_id: str) -> list[str] | None:
    """The Targets to set the counter up with when its setup is due (never done, failed or incomplete
    an hour ago, or a new Target while applying), claimed so one task is sent; else None."""
    if rt.settings.counter_setup == "off":
        return None
    counter_id = bucket.counter_id
    known = readiness(rt, [counter_id]).get(counter_id)
    targets = _targets(rt, bucket, batch_id)
    if known is not None:
        old = _now_ms() - known.checked_at > RETRY_AFTER_MS
        new_targets = not targets <= set(known.goals)
        if not ((old and (known.error or new_targets or not known.ready)) or (
            new_targets and rt.settings.counter_setup == "apply"
        )):  # fmt: skip
            return None
        targets |= set(known.goals)
    pending, now = f"{PENDING_PREFIX}{counter_id}", _now_ms()
    if not rt.redis.hsetnx(rt.keys.counter_setup, pending, now):
        since = int(cast(str, rt.redis.hget(rt.keys.counter_setup, pending)) or 0)
        if now - since < (rt.settings.counter_setup_deadline_seconds + 30) * 1000:
            return None  # sent and not over its deadline yet
        rt.redis.hset(rt.keys.counter_setup, pending, now)  # that task was lost: send another
    return sorted(targets)


def done(rt: Runtime, counter_id: int) -> None:
    """The setup task ended: the next due() may send another."""
    rt.redis.hdel(rt.keys.counter_setup, f"{PENDING_PREFIX}{counter_id}")


def hold(rt: Runtime, bucket: Bucket, batch_id: str) -> None:
    """Raise ``JoinWindowClosed`` while the counter's join window is not open (``counter_join_wait=hold``):
    a setup task is under way and the counter was never set up (or lacks a goal this batch's Targets
    need), or this worker switched its option on less than ``counter_join_wait_seconds`` ago. With
    ``warn`` the upload goes, with a warning. A failed setup never holds anything."""
    s = rt.settings
    if s.counter_setup == "off":
        return
    known = readiness(rt, [bucket.counter_id]).get(bucket.counter_id)
    option = option_of(bucket.kind)
    if (
        s.counter_join_wait == "hold"
        and rt.redis.hexists(rt.keys.counter_setup, f"{PENDING_PREFIX}{bucket.counter_id}")
        and (known is None or not _targets(rt, bucket, batch_id) <= set(known.goals))
    ):
        raise JoinWindowClosed("the counter's setup is under way", retry_after=2.0)
    if known is None:
        return
    opens = known.window_opens_at(option, int(s.counter_join_wait_seconds * 1000))
    left = (opens - _now_ms()) / 1000
    if left <= 0:
        return
    if s.counter_join_wait == "hold":
        raise JoinWindowClosed(
            f"the counter's join window opens in {left:.0f} s ({option} switched on)", retry_after=left
        )
    log.warning("counter_join_window_not_open", counter_id=bucket.counter_id, option=option, opens_in=round(left))
    rt.metrics.incr("uploads_before_join_window", bucket.kind.value)


def _inspect(
    rt: Runtime,
    gate: QuotaGate,
    token: SecretStr,
    result: Readiness,
    targets: list[str],
    apply: bool,
    ends: float | None,
) -> None:
    def call(method: str, path: str, endpoint: str, body: dict[str, Any] | None = None) -> Any:
        if ends is not None and time.monotonic() > ends:
            raise DeferredError("it ran past its deadline; tried again later", retry_after=RETRY_AFTER_MS / 1000)
        purpose = Purpose.READ if method == "GET" else Purpose.WRITE
        with gate.permit(token, purpose, wait=rt.settings.quota_wait_seconds):
            return rt.metrica.management(method, path.format(counter=result.counter_id), token, endpoint, json=body)

    for name, (switch, threshold, kind) in _OPTIONS.items():
        if name not in result.enabled_at and apply:
            call("POST", switch, "counter_options")
            result.enabled_at[name] = _now_ms()
            result.options[name] = True
            result.switched_on.append(name)
            _save(rt, result)  # at once: a run killed after this never posts the switch again
        answer = call("GET", threshold, "counter_options")
        if isinstance(answer, dict) and answer.get("date"):
            result.join_from[kind] = str(answer["date"])
    have = {
        str(condition.get("url"))
        for goal in call("GET", _COUNTER + "/goals", "goals").get("goals") or []
        if goal.get("type") == "action"
        for condition in goal.get("conditions") or []
        if condition.get("type") == "exact"
    }
    for target in targets:
        if target in have:
            continue
        if not apply:
            result.missing_goals.append(target)
            continue
        goal = {"name": target, "type": "action", "conditions": [{"type": "exact", "url": target}]}
        call("POST", _COUNTER + "/goals", "goals", {"goal": goal})
        result.goals_created.append(target)
        have.add(target)
    result.goals = sorted(have & (set(targets) | set(result.goals)) | set(result.goals_created))
