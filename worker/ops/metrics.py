"""Metrics of the whole deployment, for Prometheus: counters kept in Redis, gauges read at scrape time.

A fleet runs many processes (prefork children, several machines), so no process-local counter can
answer "how many calls did we receive". Events are counted in one Redis hash instead
(``Keys.metrics``, ``HINCRBY`` per HTTP request, drained chunk, batch or Metrica request: never per
call), and everything that is state (stream lag, open batches, quota left, live workers) is read
from Redis when the endpoint is scraped. Any process can therefore serve the endpoint and every
scrape sees the same numbers: the ingestion service at ``/metrics`` and ``python -m
worker.ops.exporter`` serve :class:`Collector`.

Counting never fails the work it counts: a Redis error while counting is logged and dropped.
Label values are code-chosen words (provider names, reasons, statuses), never a phone number, a token
or a call id: every value is mapped into its label's fixed set by :func:`worker.ops.labels.bounded`
(anything else is ``other``), so no input can add series (issue 22).
"""

from __future__ import annotations

import atexit
import re
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import structlog
from redis import Redis
from redis.exceptions import RedisError

from worker.dataplane.keys import Keys
from worker.ops.labels import bounded

log = structlog.get_logger(__name__)
PREFIX = "calltrack"
_LABEL_RE = re.compile(r"[^A-Za-z0-9_.:-]+")
MAX_OPEN_SCAN = 10_000


@dataclass(frozen=True, slots=True)
class Family:
    """A counter family: its Prometheus name is ``calltrack_<name>_total``."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("calls_received", "Calls the ingestion service received (a refused request counts one).", ("provider",)),
        Family("calls_accepted", "Calls stored in an ingest stream for upload.", ("provider",)),
        Family("calls_held", "Calls kept in the held stream (unknown number, no identifier).", ("provider", "reason")),
        Family("held_expired", "Held calls deleted because they were older than held_retention_days."),
        Family(
            "held_dropped",
            "Held calls deleted by an operator (ctl held drop, the admin API) or by a replay (too_old).",
            ("reason",),
        ),
        Family("calls_ignored", "Requests that report no call (non-final status, internal call).", ("provider",)),
        Family("calls_dropped_late", "Calls older than the join window dropped (late_calls=drop).", ("provider",)),
        Family("calls_rejected", "Calls or requests refused, by reason.", ("provider", "reason")),
        Family(
            "pool_fallbacks",
            "Session API answers without a pool number, by reason (exhausted, address_limit, network_limit, "
            "nopool, rate_address, rate_counter).",
            ("reason",),
        ),
        Family("calls_drained", "Events (calls, conversions, chats) drain read from the streams."),
        Family("calls_deduplicated", "Repeats of an already accepted call dropped by drain."),
        Family("batches_sealed", "Batches sealed from buffers."),
        Family(
            "batches_uploaded",
            "Batches whose upload Metrica holds, by kind and how (posted, adopted).",
            ("kind", "how"),
        ),
        Family("batches_quarantined", "Batches quarantined (refused for good, or retries ran out).", ("kind",)),
        Family(
            "uploads_before_join_window",
            "Uploads sent before their counter's join window opened (counter_join_wait=warn).",
            ("kind",),
        ),
        Family("batches_final", "Uploads that reached a final status, by kind.", ("kind", "status")),
        Family(
            "rows_refused",
            "Rows Metrica did not keep (source_quantity - line_quantity of final uploads), by kind and counter.",
            ("kind", "counter_id"),
        ),
        Family("upload_tasks", "Upload task runs by how they ended.", ("outcome",)),
        Family(
            "webhook_deliveries",
            "Webhook delivery attempts by result (delivered, failed, deadline, refused, paused).",
            ("result",),
        ),
        Family("webhook_breaker_opened", "Times an account's webhook circuit breaker opened (worker/notify)."),
        Family(
            "metrica_requests",
            "Requests to the Metrica API by endpoint, result and Metrica's error type.",
            ("endpoint", "result", "error_type"),
        ),
    )
}


def label(value: object) -> str:
    """A safe, short label value."""
    return _LABEL_RE.sub("_", str(value))[:64] or "none"


@lru_cache(maxsize=4096)  # per request: the same few fields again (a client's word only churns the cache)
def _field(family: str, labels: tuple[str, ...]) -> str:
    spec = FAMILIES[family]
    if len(labels) != len(spec.labels):
        raise ValueError(f"{family} takes labels {spec.labels}")
    return "|".join([family, *(label(bounded(name, str(v))) for name, v in zip(spec.labels, labels, strict=True))])


class Metrics:
    """Counts events into the deployment's Redis hash."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._key = keys.metrics
        self._pending: Tally[str] | None = None  # set while buffering
        self._lock = threading.Lock()

    def buffer(self, interval: float) -> None:
        """Gather counts in memory and write them every ``interval`` seconds (and at exit), so a
        busy request path spends no round trip on them; :meth:`flush` writes them at once."""
        if self._pending is not None:
            return
        self._pending = Tally()

        def loop() -> None:
            while True:
                time.sleep(interval)
                self.flush()

        threading.Thread(target=loop, name="metrics-flush", daemon=True).start()
        atexit.register(self.flush)

    def flush(self) -> None:
        if self._pending is None:
            return
        with self._lock:
            items, self._pending = list(self._pending.items()), Tally()
        self._write(items)

    def add(self, counts: Mapping[tuple[str, tuple[str, ...]], int]) -> None:
        """Add each ``(family, labels) -> amount`` (in one round trip, or to the buffer); never raises."""
        items = [(_field(family, tuple(labels)), amount) for (family, labels), amount in counts.items() if amount]
        if not items:
            return
        if self._pending is not None:
            with self._lock:
                for field, amount in items:
                    self._pending[field] += amount
            return
        self._write(items)

    def _write(self, items: Sequence[tuple[str, int]]) -> None:
        if not items:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for field, amount in items:
                pipe.hincrby(self._key, field, amount)
            pipe.execute()
        except RedisError as error:
            log.warning("metrics_not_counted", error=type(error).__name__)

    def incr(self, family: str, *labels: str, amount: int = 1) -> None:
        self.add({(family, tuple(labels)): amount})

    def metrica_request(self, endpoint: str, result: str, error_type: str) -> None:
        """The :class:`worker.delivery.metrica.MetricaClient` observer: one count per request."""
        self.incr("metrica_requests", endpoint, result, error_type or "none")

    def intake(self, provider_of: Iterable[str], statuses: Iterable[tuple[str, str]]) -> None:
        """Count one request's calls: ``provider_of`` per call, ``statuses`` (status, reason) in the same order.

        A reason must be a short code word (``unknown_number``, ``signature``, ``field:rule``).
        """
        counts: Tally[tuple[str, tuple[str, ...]]] = Tally()
        for provider, (status, reason) in zip(provider_of, statuses, strict=True):
            counts["calls_received", (provider,)] += 1
            if status in ("accepted", "ignored"):
                counts[f"calls_{status}", (provider,)] += 1
                if status == "ignored" and reason == "too_old":
                    counts["calls_dropped_late", (provider,)] += 1
            else:
                counts[f"calls_{status}", (provider, reason or "unspecified")] += 1
        self.add(counts)

    def held_dropped(self, reasons: Iterable[str]) -> None:
        """Count held calls an operator or a replay removed, per reason's first word."""
        tally: Tally[tuple[str, tuple[str, ...]]] = Tally(("held_dropped", (reason_word(r),)) for r in reasons)
        if tally:
            self.add(tally)

    def read(self) -> dict[str, int]:
        return {k: int(v) for k, v in cast(dict[str, str], self._redis.hgetall(self._key)).items()}


def reason_word(reason: str) -> str:
    """The first word of a reason (``unknown_number``, ``no_identifier``, a field rule), for a label."""
    head = re.split(r"[\s(;:]", reason.strip(), maxsplit=1)[0] if reason.strip() else "unspecified"
    return label(head)
