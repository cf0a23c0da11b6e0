"""Join rules (``join_rules = true``): which valid rows of an upload join a visit.

A snapshot taken at upload time (the moment Metrica processes the file, in the emulator): the join
window from the counter's offline option, the counter's goals and the known visitors. A row's
DateTime stands for the visit that preceded it. Per row:

- calls with ``StaticCall=1``: never joined to a visit, still counted (they show in call reports);
- chats without any Metrica identifier: stored unattributed, counted, not joined;
- the visit is after the upload (DateTime in the future) or before the join window: not joined;
- conversions whose ``Target`` matches no JavaScript-event goal of the counter: not joined;
- an identifier missing from ``known_visitors`` (when set): not joined.

Rows not joined for those last reasons are left out of ``line_quantity`` (or kept with
``count_unjoined``); the upload ends LINKAGE_FAILURE when no row joined.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from emulator.validation import CALLS, CHATS, CONVERSIONS, ID_COLUMNS, RowJoin


@dataclass(frozen=True)
class JoinPolicy:
    """Everything needed to judge rows, fixed when the upload arrives (safe to use from a thread)."""

    now: float
    join_from: float
    known_visitors: frozenset[str] | None
    count_unjoined: bool
    goal_matcher: Callable[[str], bool] | None = None  # conversions: does a goal match this Target

    def bind(self, kind: str, header: tuple[str, ...], id_column: str) -> RowJoin:
        dt_index = header.index("DateTime")
        static_index = header.index("StaticCall") if kind == CALLS and "StaticCall" in header else -1
        target_index = header.index("Target") if kind == CONVERSIONS else -1
        id_indexes = [i for i, name in enumerate(header) if name in ID_COLUMNS[kind]]
        keep = self.count_unjoined
        known = self.known_visitors
        matcher = self.goal_matcher or (lambda _target: False)
        seen_targets: dict[str, bool] = {}
        now, join_from = self.now, self.join_from

        def judge(row: list[str]) -> tuple[bool, bool, str]:
            if static_index >= 0 and row[static_index] == "1":
                return False, True, "static call"
            ids = [row[i] for i in id_indexes if row[i]]
            if not ids:
                return False, True, "unattributed" if kind == CHATS else "no identifier"
            moment = int(row[dt_index])
            if moment > now:
                return False, keep, "the visit is after the upload"
            if moment < join_from:
                return False, keep, "outside the join window"
            if target_index >= 0:
                target = row[target_index]
                found = seen_targets.get(target)
                if found is None:
                    found = seen_targets[target] = matcher(target)
                if not found:
                    return False, keep, "no JavaScript-event goal for Target"
            if known is not None and not any(i in known for i in ids):
                return False, keep, "unknown visitor"
            return True, True, ""

        return judge
