"""Metrics of the whole deployment, for Prometheus: counters kept in Redis, gauges read at scrape time.

A fleet runs many processes (prefork children, several machines), so no process-local counter can
answer "how many calls did we receive". Events are counted in one Redis hash instead
(``Keys.metrics``, ``HINCRBY`` per HTTP request, drained chunk, batch or Metrica request: never per
call), and everything that is state (stream lag, open batches, quota left, live workers) is read
from Redis when the endpoint is scraped. Any process can therefore serve the endpoint and every
scrape sees the same numbers: the ingestion service at ``/metrics`` and ``python -m
worker.ops.exporter`` serve :class:`Collector`.

Counting never fails the work it counts: a Redis error while counting is logged and dropped.
Label values are code-chosen words (provider names, reasons, statuses, a login's fingerprint),
never a phone number, a token or a call id.
"""

from __future__ import annotations

import atexit
import re
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import orjson
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PromCollector
from redis import Redis
from redis.exceptions import RedisError

from config.settings import Settings
from worker.keys import Keys, fingerprint
from worker.ops.store_state import store_gauges

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
        Family("calls_ignored", "Requests that report no call (non-final status, internal call).", ("provider",)),
        Family("calls_rejected", "Calls or requests refused, by reason.", ("provider", "reason")),
        Family("calls_drained", "Stream entries moved into buffers by drain."),
        Family("calls_deduplicated", "Repeats of an already accepted call dropped by drain."),
        Family("batches_sealed", "Batches sealed from buffers."),
        Family(
            "batches_uploaded",
            "Batches whose upload Metrica holds, by kind and how (posted, adopted).",
            ("kind", "how"),
        ),
        Family("batches_quarantined", "Batches quarantined (refused for good, or retries ran out).", ("kind",)),
        Family("batches_final", "Uploads that reached a final status, by kind.", ("kind", "status")),
        Family("upload_tasks", "Upload task runs by how they ended.", ("outcome",)),
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


def _field(family: str, labels: Sequence[str]) -> str:
    spec = FAMILIES[family]
    if len(labels) != len(spec.labels):
        raise ValueError(f"{family} takes labels {spec.labels}")
    return "|".join([family, *(label(v) for v in labels)])


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
        items = [(_field(family, labels), amount) for (family, labels), amount in counts.items() if amount]
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
            else:
                counts[f"calls_{status}", (provider, reason or "unspecified")] += 1
        self.add(counts)

    def read(self) -> dict[str, int]:
        return {k: int(v) for k, v in cast(dict[str, str], self._redis.hgetall(self._key)).items()}


def reason_word(reason: str) -> str:
    """The first word of a reason (``unknown_number``, ``no_identifier``, a field rule), for a label."""
    head = re.split(r"[\s(;:]", reason.strip(), maxsplit=1)[0] if reason.strip() else "unspecified"
    return label(head)


# --- scrape time -------------------------------------------------------------------------------


class Collector(PromCollector):
    """Everything ``/metrics`` shows, read from Redis at scrape time (a few round trips)."""

    def __init__(self, redis: Redis, keys: Keys, *, settings: object | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(f"{PREFIX}_redis_up", "1 when Redis answered this scrape.")
        try:
            metrics = list(self._collect())
        except RedisError as error:
            log.warning("metrics_scrape_failed", error=type(error).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._pipeline_state()
        yield from self._quota()
        yield from self._liveness()
        yield from store_gauges(self._redis, self._keys)

    def _counters(self) -> Iterator[Metric]:
        raw = cast(dict[str, str], self._redis.hgetall(self._keys.metrics))
        families = {
            name: CounterMetricFamily(f"{PREFIX}_{name}", f.help, labels=f.labels) for name, f in FAMILIES.items()
        }
        for field, value in raw.items():
            name, *labels = field.split("|")
            family = families.get(name)
            if family is not None and len(labels) == len(FAMILIES[name].labels):
                family.add_metric(labels, int(value))
        yield from families.values()

    def _pipeline_state(self) -> Iterator[Metric]:
        keys, r = self._keys, self._redis
        now_ms = int(time.time() * 1000)
        lag = GaugeMetricFamily(
            f"{PREFIX}_stream_lag_calls", "Accepted calls not yet drained, per shard.", labels=["shard"]
        )
        oldest = GaugeMetricFamily(
            f"{PREFIX}_stream_oldest_pending_age_seconds",
            "Age of the oldest call not yet drained, per shard (0 when none).",
            labels=["shard"],
        )
        buffered = GaugeMetricFamily(f"{PREFIX}_buffered_calls", "Calls in open buffers, per shard.", labels=["shard"])
        batches = GaugeMetricFamily(f"{PREFIX}_batches", "Batches by where they are.", labels=["state"])
        statuses = GaugeMetricFamily(
            f"{PREFIX}_open_uploads", "Uploads whose status is not final, by Metrica status.", labels=["status"]
        )
        open_age = GaugeMetricFamily(
            f"{PREFIX}_oldest_open_upload_age_seconds", "Age of the oldest upload still waiting for a final status."
        )
        totals: Tally[str] = Tally()
        status_tally: Tally[str] = Tally()
        oldest_upload_ms = now_ms
        for shard in range(keys.shards):
            pipe = r.pipeline(transaction=False)
            pipe.xlen(keys.stream(shard))
            pipe.xrange(keys.stream(shard), count=1)
            pipe.hkeys(keys.buffer_bytes(shard))
            pipe.zcard(keys.sealed(shard))
            pipe.zcard(keys.uploaded(shard))
            pipe.zcard(keys.quarantine(shard))
            pipe.zcard(keys.done(shard))
            pipe.zrange(keys.uploaded(shard), 0, MAX_OPEN_SCAN - 1, withscores=True)
            length, first, buckets, sealed, uploaded, quarantined, done, open_ids = pipe.execute()
            lag.add_metric([str(shard)], int(length))
            age = 0.0
            if first:
                age = max(0.0, (now_ms - int(str(first[0][0]).split("-")[0])) / 1000)
            oldest.add_metric([str(shard)], age)
            pipe = r.pipeline(transaction=False)
            for bucket in buckets:
                pipe.llen(keys.buffer(shard, bucket))
            for batch_id, _ in open_ids:
                pipe.hget(keys.batch(batch_id), "status")
            replies = pipe.execute()
            buffered.add_metric([str(shard)], sum(int(n) for n in replies[: len(buckets)]))
            status_tally.update(str(s or "UNKNOWN") for s in replies[len(buckets) :])
            if open_ids:
                oldest_upload_ms = min(oldest_upload_ms, int(open_ids[0][1]))
            totals.update(sealed=int(sealed), uploaded=int(uploaded), quarantined=int(quarantined), done=int(done))
        for state in ("sealed", "uploaded", "quarantined", "done"):
            batches.add_metric([state], totals[state])
        for status, count in sorted(status_tally.items()):
            statuses.add_metric([label(status)], count)
        open_age.add_metric([], (now_ms - oldest_upload_ms) / 1000)
        held = GaugeMetricFamily(f"{PREFIX}_held_calls", "Calls in the held stream, waiting for a fix.")
        held.add_metric([], int(r.xlen(keys.held)))
        yield from (lag, oldest, buffered, batches, statuses, open_age, held)

    def _quota(self) -> Iterator[Metric]:
        from config.settings import Settings  # noqa: PLC0415 - only when the collector knows the settings

        if not isinstance(self._settings, Settings):
            return
        left = GaugeMetricFamily(
            f"{PREFIX}_quota_left", "Metrica requests a login may still make today.", labels=["login", "purpose"]
        )
        used = GaugeMetricFamily(f"{PREFIX}_quota_used_today", "Metrica requests a login made today.", labels=["login"])
        inflight = GaugeMetricFamily(f"{PREFIX}_quota_in_flight", "Requests of a login in flight.", labels=["login"])
        paused = GaugeMetricFamily(
            f"{PREFIX}_uploads_paused", "1 when Metrica refused the login's token.", labels=["login"]
        )
        for q in quota_view(self._redis, self._keys, self._settings):
            left.add_metric([q.login, "any"], q.left_today)
            left.add_metric([q.login, "upload"], q.left_for_uploads)
            used.add_metric([q.login], q.used_today)
            inflight.add_metric([q.login], q.in_flight)
            paused.add_metric([q.login], 1 if q.paused else 0)
        yield from (left, used, inflight, paused)

    def _liveness(self) -> Iterator[Metric]:
        alive = GaugeMetricFamily(
            f"{PREFIX}_processes_alive", "Workers and beats with a fresh heartbeat.", labels=["role"]
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_heartbeat_age_seconds", "Seconds since each process's last heartbeat.", labels=["role", "node"]
        )
        interval = float(getattr(self._settings, "heartbeat_interval", 5.0))
        tally: Tally[str] = Tally({"worker": 0, "beat": 0})
        for beat in heartbeats(self._redis, self._keys):
            age.add_metric([beat.role, label(beat.node)], beat.age)
            if beat.age <= interval * 3:
                tally[beat.role] += 1
        for role, count in sorted(tally.items()):
            alive.add_metric([role], count)
        yield from (alive, age)


def quota_view(redis: Redis, keys: Keys, settings: Settings) -> list[LoginQuotaView]:
    """Quota per login without a full Runtime (the collector has only a client and the keys)."""
    logins: set[str] = {fingerprint(t) for t in settings.metrica_counter_tokens.values()}
    default = settings.token_for(0) if settings.metrica_token is not None or settings.uses_emulator else None
    if default is not None:
        logins.add(fingerprint(default))
    day = time.strftime("%Y%m%d", time.gmtime())
    paused = cast(list[str], redis.hkeys(keys.paused))
    result = []
    for login in sorted(logins):
        pipe = redis.pipeline(transaction=False)
        pipe.get(keys.quota_day(login, day))
        pipe.zcount(keys.quota_inflight(login), int(time.time() * 1000), "+inf")
        used_raw, in_flight = pipe.execute()
        used = int(used_raw or 0)
        result.append(
            LoginQuotaView(
                login=login,
                used_today=used,
                left_today=max(settings.quota_daily_per_login - used, 0),
                left_for_uploads=max(settings.quota_daily_per_login - settings.quota_polling_reserve - used, 0),
                in_flight=int(in_flight),
                paused=any(p == login or p.startswith(login + ":") for p in paused),
            )
        )
    return result


@dataclass(frozen=True, slots=True)
class LoginQuotaView:
    login: str
    used_today: int
    left_today: int
    left_for_uploads: int
    in_flight: int
    paused: bool


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One worker's or beat's last heartbeat."""

    role: str
    node: str
    host: str
    pid: int
    at_ms: int

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.at_ms / 1000)


def heartbeats(redis: Redis, keys: Keys) -> list[Heartbeat]:
    found = []
    for field, raw in cast(dict[str, str], redis.hgetall(keys.heartbeats)).items():
        role, _, node = field.partition(":")
        try:
            data = orjson.loads(raw)
            found.append(Heartbeat(role, node, str(data.get("host", "")), int(data["pid"]), int(data["at"])))
        except (ValueError, KeyError, TypeError):
            continue
    return sorted(found, key=lambda b: (b.role, b.node))


def registry(redis: Redis, keys: Keys, settings: object | None = None) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector(redis, keys, settings=settings))
    return reg


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
