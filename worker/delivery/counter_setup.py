"""Counter setup: what a counter needs before its uploads can join visits, checked and switched on.

A delivered file is not an attributed one. Metrica joins calls and conversions to visits only with the
counter's offline-data options on (the extended window "grows gradually" from the moment they are
switched on), and joins a conversion only to a JavaScript-event goal whose identifier is its
``Target``. :func:`setup_counter` reads the options and join thresholds, switches the options on and
creates missing goals (``counter_setup=apply``), or only reports (``check``), and keeps the result in
``<ns>:counter_setup`` for ``ctl doctor``, ``ctl counters setup`` and ``/metrics``.
:func:`ensure_ready` runs it before a counter's first upload and for conversion targets not seen yet;
a failure is recorded, never blocks the upload, and is tried again after ``RETRY_AFTER_MS``.
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
from worker.errors import DeferredError, MetricaError
from worker.model.kinds import Bucket, UploadKind

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)
RETRY_AFTER_MS = 3_600_000
_COUNTER = "/management/v1/counter/{counter}"
_OFFLINE = _COUNTER + "/offline_conversions"
#: option field of the counter -> the request that switches it on
_OPTIONS = {
    "offline_calls_extended_threshold": _OFFLINE + "/calls_extended_threshold",
    "offline_conversion_extended_threshold": _OFFLINE + "/extended_threshold",
}


@dataclass(slots=True)
class Readiness:
    """What a counter's last setup found and did."""

    counter_id: int
    checked_at: int = 0
    options: dict[str, bool] = field(default_factory=dict)
    join_from: dict[str, str] = field(default_factory=dict)  # calls / conversions -> ISO time
    goals: list[str] = field(default_factory=list)  # conversion targets that have a goal
    switched_on: list[str] = field(default_factory=list)
    goals_created: list[str] = field(default_factory=list)
    missing_goals: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ready(self) -> bool:
        return not self.error and all(self.options.get(name) for name in _OPTIONS) and not self.missing_goals

    def problems(self) -> list[str]:
        found = [f"{name} is off" for name in _OPTIONS if not self.options.get(name)]
        found += [f"no goal for Target {target!r}" for target in self.missing_goals]
        return [self.error] if self.error else found

    def to_json(self) -> bytes:
        return orjson.dumps({**asdict(self), "ready": self.ready})

    @classmethod
    def from_json(cls, data: str | bytes) -> Readiness:
        raw = orjson.loads(data)
        raw.pop("ready", None)
        return cls(**raw)


def _now_ms() -> int:
    return int(time.time() * 1000)


def readiness(rt: Runtime, counters: Iterable[int] | None = None) -> dict[int, Readiness]:
    """The recorded readiness of ``counters`` (every recorded counter when None)."""
    if counters is None:
        raw = cast(dict[str, str], rt.redis.hgetall(rt.keys.counter_setup))
        return {int(k): Readiness.from_json(v) for k, v in raw.items()}
    wanted = list(counters)
    values = cast(list[str | None], rt.redis.hmget(rt.keys.counter_setup, [str(c) for c in wanted])) if wanted else []
    return {c: Readiness.from_json(v) for c, v in zip(wanted, values, strict=True) if v}


def setup_counter(
    rt: Runtime,
    counter_id: int,
    targets: Iterable[str] = (),
    *,
    apply: bool | None = None,
    gate: QuotaGate | None = None,
) -> Readiness:
    """Read the counter's options, thresholds and goals; with ``apply`` switch options on and create
    the goals ``targets`` need. Records and returns the result; Metrica errors land in ``error``."""
    apply = rt.settings.counter_setup == "apply" if apply is None else apply
    token = rt.accounts.token_for(counter_id, removed_ok=True)
    result = Readiness(counter_id, checked_at=_now_ms())
    if token is None:
        result.error = f"no OAuth token is configured for counter {counter_id}"
    else:
        try:
            _inspect(rt, gate or QuotaGate(rt), token, result, sorted(set(targets)), apply)
        except (MetricaError, DeferredError) as error:
            result.error = f"counter setup failed: {error}"
            log.warning("counter_setup_failed", counter_id=counter_id, error=str(error))
    previous = readiness(rt, [counter_id]).get(counter_id)
    if previous is not None:  # goals found earlier stay known
        result.goals = sorted(set(result.goals) | set(previous.goals))
    try:
        rt.redis.hset(rt.keys.counter_setup, str(counter_id), result.to_json())
    except RedisError as error:  # a full Redis (OOM) must not stop the upload this runs before
        log.warning("counter_setup_not_recorded", counter_id=counter_id, error=type(error).__name__)
    log.info("counter_setup", counter_id=counter_id, ready=result.ready, problems=result.problems())
    return result


def ensure_ready(rt: Runtime, bucket: Bucket, batch_id: str) -> None:
    """Before an upload: set the counter up if it never was (or its last try failed an hour ago), and
    make sure each conversion ``Target`` of the batch has its goal. Never raises for Metrica's sake."""
    if rt.settings.counter_setup == "off":
        return
    counter_id = bucket.counter_id
    known = readiness(rt, [counter_id]).get(counter_id)
    targets: set[str] = set()
    if bucket.kind is UploadKind.CONVERSIONS:
        for row in cast(list[str], rt.redis.lrange(rt.keys.rows(batch_id), 0, -1)):
            target = row_cells(bucket.spec, bucket.id_type, row).get("Target")
            if isinstance(target, str):
                targets.add(target)
    if known is None:
        setup_counter(rt, counter_id, targets)
        return
    old = _now_ms() - known.checked_at > RETRY_AFTER_MS
    new_targets = not targets <= set(known.goals)
    # Missing goals or a failure are looked at again after a while; new targets at once when applying.
    if (old and (known.error or new_targets or not known.ready)) or (
        new_targets and rt.settings.counter_setup == "apply"
    ):
        setup_counter(rt, counter_id, targets | set(known.goals))


def _inspect(
    rt: Runtime, gate: QuotaGate, token: SecretStr, result: Readiness, targets: list[str], apply: bool
) -> None:
    def call(method: str, path: str, endpoint: str, body: dict[str, Any] | None = None) -> Any:
        with gate.permit(token, Purpose.POLL, wait=rt.settings.quota_wait_seconds):
            return rt.metrica.management(method, path.format(counter=result.counter_id), token, endpoint, json=body)

    counter = call("GET", _COUNTER, "counter").get("counter") or {}
    options = counter.get("offline_options") or {}
    for name, path in _OPTIONS.items():
        result.options[name] = bool(options.get(name))
        if not result.options[name] and apply:
            call("POST", path, "counter_options")
            result.options[name] = True
            result.switched_on.append(name)
    for kind, path in (("calls", "/calls_visit_join_threshold"), ("conversions", "/visit_join_threshold")):
        answer = call("GET", _OFFLINE + path, "counter_options")
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
    result.goals = sorted(have & set(targets) | set(result.goals_created))
