"""The registry's health as Prometheus gauges: tokens in trouble, counters per account, accounts this
process cannot read (:mod:`worker.accounts.health` holds the reading, without prometheus_client)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from worker.accounts.crypto import KeyRing
from worker.accounts.health import PREFIX, problems
from worker.accounts.reading import read_documents
from worker.accounts.store import clear_view
from worker.dataplane.keys import Keys

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric


class AccountsCollector(Collector):
    """``calltrack_account_token_problem{account,token,state}`` = 1 per token in trouble; per account
    ``calltrack_account_counters``; with this process's key ring (``ring``), ``calltrack_account_unreadable``
    = 1 per account it cannot read (its counters' batches wait)."""

    def __init__(self, redis: Redis, keys: Keys, warning_days: float, ring: KeyRing | None = None) -> None:
        self._redis, self._keys, self._warning_days, self._ring = redis, keys, warning_days, ring

    def collect(self) -> Iterator[Metric]:
        trouble = GaugeMetricFamily(
            f"{PREFIX}_account_token_problem",
            "1 for a token Metrica or Yandex's user info refused, that expired or expires soon.",
            labels=["account", "token", "state"],
        )
        counters = GaugeMetricFamily(
            f"{PREFIX}_account_counters", "Counters of each account in the registry.", labels=["account"]
        )
        unreadable = GaugeMetricFamily(
            f"{PREFIX}_account_unreadable",
            "1 for an account whose token this process's key ring cannot read (CALLTRACK_SECRET_KEYS): "
            "its counters' batches wait.",
            labels=["account"],
        )
        try:
            for problem in problems(self._redis, self._keys, self._warning_days):
                trouble.add_metric([problem.account, problem.token, problem.state], 1)
            raw = cast(dict[str, str], self._redis.hgetall(self._keys.accounts))
            for doc in raw.values():
                with contextlib.suppress(ValueError):
                    view = clear_view(doc)
                    counters.add_metric([view.id], len(view.counters))
            if self._ring is not None and raw:
                index = cast(dict[str, str], self._redis.hgetall(self._keys.account_counters))
                for account in sorted(read_documents(self._ring, raw, index).unreadable):
                    unreadable.add_metric([account], 1)
        except RedisError:
            return  # calltrack_redis_up says so
        yield from (trouble, counters, unreadable)
