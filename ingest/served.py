"""Which counters this deployment serves: the routing table's, the configured ones and those with a token.

Conversions for any other counter are refused before anything is stored: each counter costs at
least one upload of the login's daily budget, so a made-up counter id must not reach the pipeline.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from worker.intake.routing import RoutingTable

if TYPE_CHECKING:
    from worker.runtime import Runtime


class ServedCounters:
    """The set of served counters, read from Redis at most every ``routing_cache_seconds`` (1 s at least)."""

    def __init__(self, runtime: Runtime, routing: RoutingTable) -> None:
        s = runtime.settings
        self._fixed = frozenset(s.ingest_counters) | frozenset(s.metrica_counter_tokens)
        self._routing = routing
        self._ttl = max(1.0, s.routing_cache_seconds)
        self._lock = threading.Lock()
        self._cached: frozenset[int] = frozenset()
        self._until = 0.0

    def served(self) -> frozenset[int]:
        with self._lock:
            now = time.monotonic()
            if now >= self._until:
                self._cached = self._fixed | frozenset(route.counter_id for route in self._routing.all())
                self._until = now + self._ttl
            return self._cached
