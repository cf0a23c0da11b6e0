"""What the domain code needs at run time, built once per process from the settings."""

from __future__ import annotations

import os
import socket
from functools import cached_property

import httpx
from redis import Redis

from config.settings import Settings
from worker.delivery.metrica import MetricaClient
from worker.delivery.producer import Producer
from worker.keys import Keys
from worker.model.calls import TimePolicy
from worker.ops.metrics import Metrics
from worker.scripts import Scripts
from worker.store import connect


class Runtime:
    """Settings, the Redis client, key names, scripts and the Metrica client of one process."""

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.namespace, settings.shards)
        self.policy = TimePolicy.from_days(settings.join_window_days, settings.clock_skew_seconds)
        self._transport = transport
        self.pid = os.getpid()

    @cached_property
    def redis(self) -> Redis:
        return connect(self.settings.redis_url)

    @cached_property
    def scripts(self) -> Scripts:
        return Scripts(self.redis)

    @cached_property
    def metrica(self) -> MetricaClient:
        s = self.settings
        timeout = httpx.Timeout(
            connect=s.http_connect_timeout,
            read=s.http_read_timeout,
            write=s.http_write_timeout,
            pool=s.http_pool_timeout,
        )
        return MetricaClient(
            s.api_base_url, timeout=timeout, transport=self._transport, observer=self.metrics.metrica_request
        )

    @cached_property
    def metrics(self) -> Metrics:
        """Counters kept in Redis for the whole deployment (worker/ops/metrics.py)."""
        return Metrics(self.redis, self.keys)

    @cached_property
    def producer(self) -> Producer:
        s = self.settings
        return Producer(
            self.redis,
            self.keys,
            self.policy,
            caller_ttl=s.first_caller_days * 86_400,
            memory_watermark=s.producer_memory_watermark,
            memory_check_seconds=s.memory_check_seconds,
            durability=s.producer_durability,
            durability_replicas=s.producer_durability_replicas,
            durability_timeout=s.producer_durability_timeout,
        )

    @cached_property
    def consumer_name(self) -> str:
        return f"{socket.gethostname()}-{self.pid}"

    def close(self) -> None:
        if "metrica" in self.__dict__:
            self.metrica.close()
        if "redis" in self.__dict__:
            self.redis.close()
