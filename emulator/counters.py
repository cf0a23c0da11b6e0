"""Counter settings: offline options (extended join windows) and goals, kept per counter in memory.

The management API exposes them through the
``offline_conversions/(calls_)extended_threshold`` switches, the ``(calls_)visit_join_threshold`` dates and
``counter/{id}/goals`` (see docs/metrica-api.md). Join windows follow the Metrica page on the extended
call tracking window: by default session data can be changed for 16 hours after the session; with the
extended option on, for 21 days, but only for sessions registered after the option was switched on.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emulator.errors import InvalidParameter, LimitExceeded

HOUR = 3600.0
DAY = 86400.0
DEFAULT_WINDOW = 16 * HOUR
EXTENDED_WINDOW = 21 * DAY
MAX_GOALS = 200

CALLS_OPTION = "offline_calls_extended_threshold"
CONVERSIONS_OPTION = "offline_conversion_extended_threshold"
VISITS_OPTION = "offline_visits_extended_threshold"
OPTIONS = (CONVERSIONS_OPTION, CALLS_OPTION, VISITS_OPTION)
CONDITION_TYPES = frozenset({"exact", "contain", "start", "regexp"})
CHAT_GOAL_NAME = "Chat"


@dataclass
class Goal:
    """A counter goal as the management API answers it."""

    id: int
    name: str
    type: str
    conditions: list[dict[str, str]] = field(default_factory=list)
    is_retargeting: int = 0
    default_price: float = 0.0

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "is_retargeting": self.is_retargeting,
            "default_price": self.default_price,
            "conditions": [dict(c) for c in self.conditions],
        }

    def matches_target(self, target: str) -> bool:
        """A JavaScript-event (``action``) goal whose condition matches the event id ``target``."""
        if self.type != "action":
            return False
        for condition in self.conditions:
            value, kind = condition.get("url", ""), condition.get("type", "exact")
            if (
                (kind == "exact" and target == value)
                or (kind == "contain" and value in target)
                or (kind == "start" and target.startswith(value))
                or (kind == "regexp" and _regexp_matches(value, target))
            ):
                return True
        return False


def _regexp_matches(pattern: str, target: str) -> bool:
    try:
        return re.search(pattern, target) is not None
    except re.error:
        return False


@dataclass
class CounterSettings:
    """Offline options (Unix time each was switched on, None = off) and goals of one counter."""

    enabled: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(OPTIONS))
    goals: list[Goal] = field(default_factory=list)
    calls_goal_name: str | None = None

    def options(self) -> dict[str, int]:
        return {name: int(self.enabled.get(name) is not None) for name in OPTIONS}


def join_from(enabled_at: float | None, now: float) -> float:
    """Earliest visit time data processed at ``now`` can still be joined to.

    Off: the last 16 hours. On: visits since the option was switched on (at most 21 days back), and
    never less than the default 16 hours."""
    default = now - DEFAULT_WINDOW
    if enabled_at is None:
        return default
    return min(default, max(enabled_at, now - EXTENDED_WINDOW))


class CounterRegistry:
    """Settings of every counter touched so far; goal ids increase globally."""

    def __init__(self) -> None:
        self._settings: dict[int, CounterSettings] = {}
        self._goal_ids = itertools.count(1)

    def get(self, counter: int) -> CounterSettings:
        settings = self._settings.get(counter)
        if settings is None:
            settings = self._settings[counter] = CounterSettings()
        return settings

    def known(self) -> list[int]:
        return sorted(self._settings)

    def clear(self) -> None:
        self._settings.clear()

    def set_option(self, counter: int, name: str, on: bool, now: float) -> None:
        if name not in OPTIONS:
            raise InvalidParameter(f"Unknown offline option '{name}'; known: {', '.join(OPTIONS)}", name)
        enabled = self.get(counter).enabled
        if not on:
            enabled[name] = None
        elif enabled.get(name) is None:
            enabled[name] = now  # switching on again keeps the original moment

    def set_options(self, counter: int, options: Mapping[str, Any], now: float) -> None:
        """Apply ``offline_options`` (0/1 or booleans per option) as PUT counter/{id} does."""
        for name, value in options.items():
            if isinstance(value, bool) or value in (0, 1):
                self.set_option(counter, name, bool(value), now)
            else:
                raise InvalidParameter(f"offline_options.{name} must be 0 or 1, got {value!r}", name)

    def add_goal(self, counter: int, data: Mapping[str, Any]) -> Goal:
        """Validate ``{"name", "type", "conditions", ...}`` and store the goal."""
        name = data.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise InvalidParameter("goal.name must be a non-empty string of at most 255 characters", "goal.name")
        goal_type = data.get("type")
        if not isinstance(goal_type, str) or not goal_type:
            raise InvalidParameter("goal.type is required", "goal.type")
        raw_conditions = data.get("conditions", [])
        if not isinstance(raw_conditions, list):
            raise InvalidParameter("goal.conditions must be a list", "goal.conditions")
        conditions: list[dict[str, str]] = []
        for item in raw_conditions:
            if not isinstance(item, Mapping) or not isinstance(item.get("url"), str) or not item.get("url"):
                raise InvalidParameter("each goal condition needs a non-empty 'url'", "goal.conditions")
            kind = str(item.get("type", "exact"))
            if goal_type == "action" and kind not in CONDITION_TYPES:
                raise InvalidParameter(
                    f"condition type '{kind}' is not allowed for an action goal; allowed: "
                    + ", ".join(sorted(CONDITION_TYPES)),
                    "goal.conditions",
                )
            conditions.append({"type": kind, "url": str(item["url"])})
        if goal_type == "action" and not conditions:
            raise InvalidParameter("a JavaScript-event (action) goal needs a condition", "goal.conditions")
        settings = self.get(counter)
        if len(settings.goals) >= MAX_GOALS:
            raise LimitExceeded(f"A counter can have at most {MAX_GOALS} goals", "goal")
        price = data.get("default_price", 0.0)
        goal = Goal(
            id=next(self._goal_ids),
            name=name,
            type=goal_type,
            conditions=conditions,
            is_retargeting=int(bool(data.get("is_retargeting", 0))),
            default_price=float(price) if isinstance(price, int | float) and not isinstance(price, bool) else 0.0,
        )
        settings.goals.append(goal)
        return goal

    def ensure_auto_goal(self, counter: int, name: str, goal_type: str) -> None:
        """The goal Metrica creates by itself (calls goal from new_goal_name, the "Chat" goal)."""
        settings = self.get(counter)
        if not any(g.type == goal_type for g in settings.goals):
            settings.goals.append(Goal(id=next(self._goal_ids), name=name, type=goal_type))

    def has_target(self, counter: int, target: str) -> bool:
        return any(goal.matches_target(target) for goal in self.get(counter).goals)
