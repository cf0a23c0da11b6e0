"""A controllable clock: real time plus an offset, optionally frozen."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def parse_iso(value: str) -> float:
    """Parse an ISO 8601 time (``Z`` or offset; naive means UTC) into Unix seconds."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def format_iso(ts: float) -> str:
    """Unix seconds as Metrica writes times: ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Clock:
    """Emulator time. ``now()`` is real time plus ``offset``, or a fixed moment while frozen."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self._frozen_at: float | None = None

    def now(self) -> float:
        if self._frozen_at is not None:
            return self._frozen_at
        return time.time() + self.offset

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def advance(self, seconds: float) -> None:
        """Move the clock forward (or back, with a negative value)."""
        if self._frozen_at is not None:
            self._frozen_at += seconds
        else:
            self.offset += seconds

    def set(self, ts: float, frozen: bool | None = None) -> None:
        """Jump to ``ts``; ``frozen`` True/False freezes/unfreezes, None keeps the current mode."""
        keep_frozen = self.frozen if frozen is None else frozen
        self.offset = ts - time.time()
        self._frozen_at = ts if keep_frozen else None

    def freeze(self) -> None:
        self._frozen_at = self.now()

    def unfreeze(self) -> None:
        if self._frozen_at is not None:
            self.offset = self._frozen_at - time.time()
            self._frozen_at = None

    def reset(self, offset: float = 0.0) -> None:
        self.offset = offset
        self._frozen_at = None
