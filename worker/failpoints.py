"""Failpoints: named places where the chaos suite kills the process for real.

Off unless ``CALLTRACK_FAILPOINTS`` is set when the process starts, as ``name=probability,...``
(e.g. ``after_seal=0.05,after_upload_answer=0.1``). A hit sends SIGKILL to the process itself: no
cleanup, no ``finally``, exactly as when a machine dies at that line.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

ENV = "CALLTRACK_FAILPOINTS"


def _parse(text: str) -> dict[str, float]:
    points: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, share = item.partition("=")
        points[name.strip()] = float(share or 1)
    return points


_POINTS = _parse(os.environ.get(ENV, ""))


def failpoint(name: str) -> None:
    """Kill this process here, with the configured probability; a no-op when not configured."""
    share = _POINTS.get(name)
    if share and random.random() < share:  # noqa: S311 - chaos, not crypto
        os.kill(os.getpid(), signal.SIGKILL)


def arm(name: str, within_seconds: float) -> None:
    """With the configured probability, SIGKILL this process at a random moment in the next
    ``within_seconds``: used around a request, so the kill lands while it is in flight."""
    share = _POINTS.get(name)
    if not share or random.random() >= share:  # noqa: S311
        return

    def fire() -> None:
        time.sleep(random.uniform(0, within_seconds))  # noqa: S311
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=fire, name=f"failpoint-{name}", daemon=True).start()
