"""An inline SVG line chart of throughput slots: numbers only, so the template needs no raw markup."""

from __future__ import annotations

import time
from dataclasses import dataclass

from worker.ops.fleet import Slot

WIDTH, HEIGHT, PAD = 720, 200, 36


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    sealed: str  # polyline points
    final: str
    top: int  # the value of the top grid line
    labels: list[tuple[float, str]]  # x, "HH:MM" (UTC)
    total_sealed: int
    total_final: int


def chart(slots: list[Slot]) -> Chart:
    top = max([1, *(s.sealed for s in slots), *(s.final for s in slots)])
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    step = inner_w / max(len(slots) - 1, 1)

    def points(values: list[int]) -> str:
        return " ".join(f"{PAD + i * step:.1f},{PAD + inner_h - v / top * inner_h:.1f}" for i, v in enumerate(values))

    every = max(len(slots) // 6, 1)
    labels = [
        (PAD + i * step, time.strftime("%H:%M", time.gmtime(s.start_ms / 1000)))
        for i, s in enumerate(slots)
        if i % every == 0
    ]
    return Chart(
        WIDTH,
        HEIGHT,
        points([s.sealed for s in slots]),
        points([s.final for s in slots]),
        top,
        labels,
        sum(s.sealed for s in slots),
        sum(s.final for s in slots),
    )
