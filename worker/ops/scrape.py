"""What ``/metrics`` shows at scrape time: the counters of :mod:`worker.ops.metrics` and the state of
the pipeline, the quotas, the fleet and the counters' setup, read from Redis (a few round trips)."""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterator
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
from worker.accounts.collector import AccountsCollector
from worker.accounts.crypto import KeyRing
from worker.dataplane.entries import events_waiting
from worker.dataplane.keys import Keys
from worker.dataplane.scripts import source
from worker.delivery.counter_setup import PENDING_PREFIX, Readiness
from worker.intake.held import reason_counts
from worker.ops.labels import bounded
from worker.ops.metrics import FAMILIES, MAX_OPEN_SCAN, PREFIX, label
from worker.ops.quotas import quota_view
from worker.ops.store_state import store_gauges

log = structlog.get_logger(__name__)


class Collector(PromCollector):
    """Everything ``/metrics`` shows, read from Redis at scrape time (a few round trips)."""

    def __init__(self, redis: Redis, keys: Keys, *, settings: object | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings
        # held_recount.lua, for the held calls per reason (no #!lua line: the same text on Redis 6 and 7).
        self._recount = redis.register_script(source("held_recount"))

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
        yield from self._counter_setup()
        yield from self._webhooks()
        yield from store_gauges(self._redis, self._keys)

    def _webhooks(self) -> Iterator[Metric]:
        """Webhook events waiting and dead; accounts whose circuit breaker is open (worker/notify/breaker.py)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hlen(self._keys.notify("outbox"))
        pipe.hlen(self._keys.notify("dead"))
        pipe.hgetall(self._keys.notify("breaker"))
        waiting, dead, breakers = pipe.execute()
        events = GaugeMetricFamily(f"{PREFIX}_webhook_events", "Webhook events by where they are.", labels=["state"])
        events.add_metric(["waiting"], int(waiting))
        events.add_metric(["dead"], int(dead))
        now_ms = int(time.time() * 1000)
        opened = sum(1 for name, until in breakers.items() if str(name).endswith(":open") and int(until) > now_ms)
        open_gauge = GaugeMetricFamily(
            f"{PREFIX}_webhook_breakers_open", "Accounts whose webhook circuit breaker is open (deliveries paused)."
        )
        open_gauge.add_metric([], opened)
        yield from (events, open_gauge)

    def _counter_setup(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            f"{PREFIX}_counter_ready",
            "1 when a counter's offline-data options are on and its conversion goals exist (last setup).",
            labels=["counter_id"],
        )
        for counter, raw in sorted(cast(dict[str, str], self._redis.hgetall(self._keys.counter_setup)).items()):
            if not counter.startswith(PENDING_PREFIX):  # a setup task under way, not a record
                ready.add_metric([counter], 1 if Readiness.from_json(raw).ready else 0)
        yield ready

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
            pipe.hmget(keys.stream_tally(shard), ["e", "n"])
            pipe.xrange(keys.stream(shard), count=1)
            pipe.hkeys(keys.buffer_bytes(shard))
            pipe.zcard(keys.sealed(shard))
            pipe.zcard(keys.uploaded(shard))
            pipe.zcard(keys.quarantine(shard))
            pipe.zcard(keys.done(shard))
            pipe.zrange(keys.uploaded(shard), 0, MAX_OPEN_SCAN - 1, withscores=True)
            length, tally, first, buckets, sealed, uploaded, quarantined, done, open_ids = pipe.execute()
            lag.add_metric([str(shard)], events_waiting(int(length), tally))
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
        held = GaugeMetricFamily(
            f"{PREFIX}_held_calls", "Calls in the held stream, waiting for a fix, by reason.", labels=["reason"]
        )
        per_reason: Tally[str] = Tally()
        for reason, count in reason_counts(r, keys, self._recount).items():
            per_reason[bounded("reason", reason)] += count  # outside labels.py's set: other
        for reason, count in sorted(per_reason.items()):
            held.add_metric([reason], count)
        yield from (lag, oldest, buffered, batches, statuses, open_age, held)

    def _quota(self) -> Iterator[Metric]:

        if not isinstance(self._settings, Settings):
            return
        left = GaugeMetricFamily(
            f"{PREFIX}_quota_left", "Metrica requests a login may still make today.", labels=["login", "purpose"]
        )
        used = GaugeMetricFamily(f"{PREFIX}_quota_used_today", "Metrica requests a login made today.", labels=["login"])
        group = GaugeMetricFamily(
            f"{PREFIX}_quota_group_used_today",
            "Metrica requests a login made today per method group (client_read, client_write), each its own budget.",
            labels=["login", "group"],
        )
        inflight = GaugeMetricFamily(f"{PREFIX}_quota_in_flight", "Requests of a login in flight.", labels=["login"])
        paused = GaugeMetricFamily(
            f"{PREFIX}_uploads_paused", "1 when Metrica refused the login's token.", labels=["login"]
        )
        for q in quota_view(self._redis, self._keys, self._settings):
            left.add_metric([q.login, "any"], q.left_today)
            left.add_metric([q.login, "upload"], q.left_for_uploads)
            left.add_metric([q.login, "poll"], q.left_for_polls)
            used.add_metric([q.login], q.used_today)
            for name, count in q.used.items():
                group.add_metric([q.login, name], count)
            inflight.add_metric([q.login], q.in_flight)
            paused.add_metric([q.login], 1 if q.paused else 0)
        yield from (left, used, group, inflight, paused)

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
    ring = KeyRing(getattr(settings, "secret_keys", ())) if settings is not None else None
    reg.register(AccountsCollector(redis, keys, float(getattr(settings, "token_warning_days", 14.0)), ring))
    return reg


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
