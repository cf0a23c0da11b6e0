"""What the domain code needs at run time, built once per process from the settings."""

from __future__ import annotations

import os
import socket
from functools import cached_property
from typing import TYPE_CHECKING

import structlog
from redis import Redis

from config.settings import Settings
from worker.dataplane.keys import Keys
from worker.dataplane.scripts import Scripts
from worker.store import Durability, connect_data

if TYPE_CHECKING:
    import asyncio

    import httpx
    from pydantic import SecretStr
    from redis.asyncio import Redis as AsyncRedis

    from worker.accounts.flush import FlushAges
    from worker.accounts.registry import Registry
    from worker.delivery.metrica import MetricaClient
    from worker.delivery.producer import Producer
    from worker.model.calls import TimePolicy
    from worker.model.phones import PhoneRegions
    from worker.ops.metrics import Metrics

log = structlog.get_logger(__name__)


class Runtime:
    """Settings, the Redis client, key names, scripts and the Metrica client of one process."""

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.namespace, settings.shards)
        self._transport = transport
        self.pid = os.getpid()
        self._async: tuple[asyncio.AbstractEventLoop, AsyncRedis] | None = None

    # The models, the registry, the metrics, the producer and the Metrica client are imported when
    # first used: a process that only reads the store (``ctl status``) starts without them (issue 25).
    @cached_property
    def policy(self) -> TimePolicy:
        from worker.model.calls import TimePolicy  # noqa: PLC0415 - see above

        s = self.settings
        return TimePolicy.from_days(s.join_window_days, s.clock_skew_seconds, late_static=s.late_calls == "static")

    @cached_property
    def regions(self) -> PhoneRegions:
        from worker.model.phones import PhoneRegions  # noqa: PLC0415 - see above

        return PhoneRegions(self.settings.phone_region, self.settings.phone_regions, self._counter_region)

    @cached_property
    def redis(self) -> Redis:
        return connect_data(self.settings)

    def async_redis(self) -> AsyncRedis | None:
        """The ``redis.asyncio`` client of the running event loop (one per loop: its connections belong
        to it), for the ingestion service's request path (worker/dataplane/steps.py); None on a Redis
        Cluster, where the request path keeps the synchronous client in the thread pool."""
        if self.settings.redis_cluster:
            return None
        import asyncio  # noqa: PLC0415 - the service's only (issue 25)

        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            from worker.store import connect_async  # noqa: PLC0415 - the service's only (issue 25)

            self._async = (loop, connect_async(self.settings.redis_url))
        return self._async[1]

    async def aclose(self) -> None:
        """Close the event loop's client (the synchronous ones close in :meth:`close`)."""
        import asyncio  # noqa: PLC0415 - the service's only (issue 25)

        if self._async is not None and self._async[0] is asyncio.get_running_loop():
            await self._async[1].aclose()
        self._async = None

    @cached_property
    def scripts(self) -> Scripts:
        return Scripts(self.redis)

    @cached_property
    def metrica(self) -> MetricaClient:
        import httpx  # noqa: PLC0415 - see above

        from worker.delivery.metrica import MetricaClient  # noqa: PLC0415

        s = self.settings
        timeout = httpx.Timeout(
            connect=s.http_connect_timeout,
            read=s.http_read_timeout,
            write=s.http_write_timeout,
            pool=s.http_pool_timeout,
        )
        if s.metrica_legacy_endpoints is not None:
            log.warning(
                "setting_deprecated",
                setting="CALLTRACK_METRICA_LEGACY_ENDPOINTS",
                note="no effect: the documented per-kind endpoints are the default; "
                "CALLTRACK_METRICA_UNIFIED_ENDPOINT=true opts into the unified one",
            )
        return MetricaClient(
            s.api_base_url,
            timeout=timeout,
            transport=self._transport,
            observer=self.metrics.metrica_request,
            unified=s.metrica_unified_endpoint,
        )

    def _counter_region(self, counter_id: int) -> str | None:
        """The phone region the registry gives a counter (``ctl counters update N --phone-region KZ``)."""
        found = self.accounts.counter(counter_id)
        return found[1].phone_region if found is not None else None

    @cached_property
    def accounts(self) -> Registry:
        """The account registry (worker/accounts/): tokens and settings per counter, cached briefly."""
        from worker.accounts.registry import Registry  # noqa: PLC0415 - see above

        return Registry(self.redis, self.keys, self.settings, learn_login=self._learn_login)

    def _learn_login(self, token: SecretStr) -> str | None:
        from worker.accounts import oauth  # noqa: PLC0415 - see above

        return oauth.user_login(self.settings, token)

    @cached_property
    def flush_ages(self) -> FlushAges:
        """Publishes the registry's per-counter flush ages for drain.lua (worker/accounts/flush.py)."""
        from worker.accounts.flush import FlushAges  # noqa: PLC0415 - see above

        return FlushAges(self.accounts)

    @cached_property
    def metrics(self) -> Metrics:
        """Counters kept in Redis for the whole deployment (worker/ops/metrics.py)."""
        from worker.ops.metrics import Metrics  # noqa: PLC0415 - see above

        return Metrics(self.redis, self.keys)

    @cached_property
    def durability(self) -> Durability:
        """What the producer and the uploader wait for before they act on a write (worker/store.py)."""
        s = self.settings
        return Durability(s.producer_durability, s.producer_durability_replicas, s.producer_durability_timeout)

    @cached_property
    def producer(self) -> Producer:
        from worker.delivery.producer import Producer  # noqa: PLC0415 - see above

        s = self.settings
        return Producer(
            self.redis,
            self.keys,
            self.policy,
            caller_ttl=s.first_caller_days * 86_400,
            caller_period_days=s.first_caller_period_days,
            caller_buckets=s.caller_buckets,
            memory_watermark=s.producer_memory_watermark,
            memory_check_seconds=s.memory_check_seconds,
            durability=self.durability,
            regions=self.regions,
        )

    @cached_property
    def consumer_name(self) -> str:
        return f"{socket.gethostname()}-{self.pid}"

    def close(self) -> None:
        if "metrica" in self.__dict__:
            self.metrica.close()
        if "redis" in self.__dict__:
            self.redis.close()
