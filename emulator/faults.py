"""Fault injection: random shares of errors/drops, latency, and scripted answers.

A *rule* applies to requests matching its scope (endpoint kinds and counters; None = all):
one random draw per request picks at most one of 503 ``backend_error``, 504 ``timeout``,
drop-before-store or drop-after-store by their shares; ``latency`` (fixed or a range) is added
to every matching request. A *script* entry answers the next matching requests with its answers
in order, before any rule is consulted. A passed answer may carry a ``shape``: the request is handled
(an upload is stored) and its 2xx answer is rewritten into that shape (see :data:`SHAPES`).

Every injected fault is logged as such: event ``fault_injected`` with ``injected=True``, the
endpoint kind, the counter, the action (``error``, a drop, ``latency``, a ``shape``, ``forget``)
and where it came from (``rule`` or ``script``), so a log reader never takes it for a real failure.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

UPLOAD_KINDS = frozenset({"upload", "status", "list"})
# "management" (counters, counter, goals, thresholds) is faulted only by rules and scripts naming it.
KINDS = UPLOAD_KINDS | {"management"}
ACTIONS = frozenset({"pass", "error", "drop_before_store", "drop_after_store"})
DROP_ACTIONS = frozenset({"drop_before_store", "drop_after_store"})
#: How a passed request's 2xx answer is rewritten: ``uploading`` (the upload object under
#: ``uploading``), ``uploadings`` (as the only element of ``uploadings``), ``untyped`` (no ``type`` in
#: any upload object), ``unreadable`` (a JSON object holding no upload), ``not_json`` (a text body).
SHAPES = frozenset({"uploading", "uploadings", "untyped", "unreadable", "not_json"})

log = structlog.get_logger("emulator.faults")

DEFAULT_ERROR_TYPES = {
    400: "invalid_parameter",
    401: "unauthorized",
    403: "access_denied",
    404: "not_found",
    409: "conflict",
    420: "quota_requests_by_ip",
    429: "quota_requests_by_ip",
    500: "backend_error",
    503: "backend_error",
    504: "timeout",
}


@dataclass(frozen=True)
class FaultRule:
    """Random faults for requests in scope. Shares are probabilities (0..1), summing to at most 1."""

    backend_error_share: float = 0.0
    timeout_share: float = 0.0
    drop_before_store_share: float = 0.0
    drop_after_store_share: float = 0.0
    latency: tuple[float, float] = (0.0, 0.0)
    kinds: frozenset[str] | None = None
    #: share of stored uploads Metrica then forgets: 404 on status, gone from the list, rows dropped
    forget_share: float = 0.0
    counters: frozenset[int] | None = None

    def matches(self, kind: str, counter: int) -> bool:
        kind_ok = kind in UPLOAD_KINDS if self.kinds is None else kind in self.kinds
        return kind_ok and (self.counters is None or counter in self.counters)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend_error_share": self.backend_error_share,
            "timeout_share": self.timeout_share,
            "drop_before_store_share": self.drop_before_store_share,
            "drop_after_store_share": self.drop_after_store_share,
            "latency": list(self.latency),
            "kinds": sorted(self.kinds) if self.kinds is not None else None,
            "counters": sorted(self.counters) if self.counters is not None else None,
            "forget_share": self.forget_share,
        }


@dataclass(frozen=True)
class ScriptedAnswer:
    """One scripted answer: ``pass`` (handle normally; with ``shape``, answer in that shape),
    ``error`` (status + Metrica error body, or a raw ``body``), ``drop_before_store`` or
    ``drop_after_store``; ``latency`` seconds first."""

    action: str
    status: int = 0
    error_type: str | None = None
    message: str | None = None
    body: Any = None
    latency: float = 0.0
    shape: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "status": self.status,
            "error_type": self.error_type,
            "message": self.message,
            "body": self.body,
            "latency": self.latency,
            "shape": self.shape,
        }


@dataclass
class ScriptEntry:
    """Answers consumed in order by requests matching ``kind``/``counter`` (None = any)."""

    answers: list[ScriptedAnswer]
    kind: str | None = None
    counter: int | None = None

    def matches(self, kind: str, counter: int) -> bool:
        kind_ok = kind in UPLOAD_KINDS if self.kind is None else self.kind == kind
        return kind_ok and (self.counter is None or self.counter == counter)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "counter": self.counter, "answers": [a.to_dict() for a in self.answers]}


@dataclass(frozen=True)
class Decision:
    """What the fault layer wants done with one request."""

    action: str = "pass"
    latency: float = 0.0
    status: int = 0
    error_type: str | None = None
    message: str | None = None
    body: Any = None
    source: str = "none"  # "none" | "rule" | "script"
    shape: str | None = None


def _share(value: Any, name: str) -> float:
    share = float(value)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"{name} must be within 0..1, got {value!r}")
    return share


def _latency(value: Any) -> tuple[float, float]:
    if isinstance(value, int | float):
        low = high = float(value)
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        low, high = float(value[0]), float(value[1])
    else:
        raise ValueError(f"latency must be a number or [low, high], got {value!r}")
    if low < 0 or high < low:
        raise ValueError(f"latency range is invalid: {value!r}")
    return (low, high)


def _kinds(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    kinds = frozenset([value] if isinstance(value, str) else value)
    unknown = kinds - KINDS
    if unknown:
        raise ValueError(f"unknown endpoint kinds {sorted(unknown)}; known: {sorted(KINDS)}")
    return kinds


def _counters(value: Any) -> frozenset[int] | None:
    if value is None:
        return None
    return frozenset(int(c) for c in ([value] if isinstance(value, int | str) else value))


def _check_keys(data: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"unknown {what} keys: {sorted(unknown)}")


def rule_from_dict(data: Mapping[str, Any]) -> FaultRule:
    """Build a rule from TOML/JSON; see :class:`FaultRule` for the keys."""
    _check_keys(data, set(FaultRule.__dataclass_fields__), "fault rule")
    rule = FaultRule(
        backend_error_share=_share(data.get("backend_error_share", 0.0), "backend_error_share"),
        timeout_share=_share(data.get("timeout_share", 0.0), "timeout_share"),
        drop_before_store_share=_share(data.get("drop_before_store_share", 0.0), "drop_before_store_share"),
        drop_after_store_share=_share(data.get("drop_after_store_share", 0.0), "drop_after_store_share"),
        latency=_latency(data.get("latency", 0.0)),
        kinds=_kinds(data.get("kinds")),
        counters=_counters(data.get("counters")),
        forget_share=_share(data.get("forget_share", 0.0), "forget_share"),
    )
    total = rule.backend_error_share + rule.timeout_share + rule.drop_before_store_share + rule.drop_after_store_share
    if total > 1.0 + 1e-9:
        raise ValueError(f"fault shares add up to {total}, more than 1")
    return rule


def answer_from_value(value: Any) -> ScriptedAnswer:
    """``503`` / ``"drop_after_store"`` / ``"pass"`` / ``{"status": 429, "error_type": ...}``."""
    if isinstance(value, bool):
        raise ValueError(f"invalid scripted answer {value!r}")
    if isinstance(value, int):
        return ScriptedAnswer(action="error", status=value, error_type=DEFAULT_ERROR_TYPES.get(value))
    if isinstance(value, str):
        if value not in ACTIONS - {"error"}:
            raise ValueError(f"invalid scripted answer {value!r}")
        return ScriptedAnswer(action=value)
    if isinstance(value, Mapping):
        _check_keys(value, set(ScriptedAnswer.__dataclass_fields__), "scripted answer")
        status = int(value.get("status", 0))
        action = str(value.get("action", "error" if status else "pass"))
        if action not in ACTIONS:
            raise ValueError(f"invalid scripted action {action!r}")
        if action == "error" and not 100 <= status <= 599:
            raise ValueError(f"scripted error needs an HTTP status, got {value!r}")
        error_type = value.get("error_type")
        shape = value.get("shape")
        if shape is not None and (shape not in SHAPES or action != "pass"):
            raise ValueError(f"shape must be one of {sorted(SHAPES)} on a 'pass' answer, got {value!r}")
        return ScriptedAnswer(
            action=action,
            status=status,
            error_type=str(error_type) if error_type is not None else DEFAULT_ERROR_TYPES.get(status),
            message=value.get("message"),
            body=value.get("body"),
            latency=_latency(value.get("latency", 0.0))[0],
            shape=shape,
        )
    raise ValueError(f"invalid scripted answer {value!r}")


def script_from_dict(data: Mapping[str, Any]) -> ScriptEntry:
    """``{"kind": "upload", "counter": 1, "answers": [503, "drop_after_store", "pass"]}``."""
    _check_keys(data, {"kind", "counter", "answers"}, "script entry")
    kind = data.get("kind")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown endpoint kind {kind!r}")
    counter = data.get("counter")
    answers = data.get("answers")
    if not isinstance(answers, list) or not answers:
        raise ValueError("a script entry needs a non-empty 'answers' list")
    return ScriptEntry(
        answers=[answer_from_value(a) for a in answers],
        kind=kind,
        counter=int(counter) if counter is not None else None,
    )


@dataclass
class FaultInjector:
    """Holds the current rules and scripts and decides, per request, what to inject."""

    rules: list[FaultRule] = field(default_factory=list)
    scripts: list[ScriptEntry] = field(default_factory=list)
    seed: int | None = None
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - fault shares, not security

    def configure(self, rules: Sequence[FaultRule], scripts: Sequence[ScriptEntry], seed: int | None = None) -> None:
        self.rules = list(rules)
        self.scripts = [ScriptEntry(list(s.answers), s.kind, s.counter) for s in scripts]
        if seed is not None:
            self.seed = seed
            self.rng = random.Random(seed)  # noqa: S311

    def clear(self) -> None:
        self.rules = []
        self.scripts = []

    def decide(self, kind: str, counter: int) -> Decision:
        """Pick this request's fault: the next scripted answer if a script matches, else the rules."""
        decision = self._decide(kind, counter)
        if decision.action != "pass" or decision.latency > 0 or decision.shape is not None:
            log.info(
                "fault_injected",
                injected=True,
                kind=kind,
                counter=counter,
                action=decision.action if decision.action != "pass" else decision.shape or "latency",
                status=decision.status or None,
                error_type=decision.error_type,
                latency=round(decision.latency, 3),
                source=decision.source,
            )
        return decision

    def _decide(self, kind: str, counter: int) -> Decision:
        for index, entry in enumerate(self.scripts):
            if entry.matches(kind, counter):
                answer = entry.answers.pop(0)
                if not entry.answers:
                    del self.scripts[index]
                return Decision(
                    action=answer.action,
                    latency=answer.latency,
                    status=answer.status,
                    error_type=answer.error_type,
                    message=answer.message,
                    body=answer.body,
                    source="script",
                    shape=answer.shape,
                )
        latency = 0.0
        for rule in self.rules:
            if not rule.matches(kind, counter):
                continue
            low, high = rule.latency
            if high > 0:
                latency += low if high == low else self.rng.uniform(low, high)
            draw = self.rng.random()
            for share, action, status in (
                (rule.backend_error_share, "error", 503),
                (rule.timeout_share, "error", 504),
                (rule.drop_before_store_share, "drop_before_store", 0),
                (rule.drop_after_store_share, "drop_after_store", 0),
            ):
                if share > 0 and draw < share:
                    return Decision(
                        action=action,
                        latency=latency,
                        status=status,
                        error_type=DEFAULT_ERROR_TYPES.get(status),
                        source="rule",
                    )
                draw -= share
        return Decision(latency=latency, source="rule" if latency else "none")

    def forgets(self, kind: str, counter: int) -> bool:
        """Whether Metrica loses this just-stored upload (a ``forget_share`` draw of a matching rule)."""
        forgets = any(
            rule.forget_share > 0 and rule.matches(kind, counter) and self.rng.random() < rule.forget_share
            for rule in self.rules
        )
        if forgets:
            log.info("fault_injected", injected=True, kind=kind, counter=counter, action="forget", source="rule")
        return forgets

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": [r.to_dict() for r in self.rules],
            "script": [s.to_dict() for s in self.scripts],
            "seed": self.seed,
        }
