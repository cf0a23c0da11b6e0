"""What is wrong with tokens, per account, read from the stored documents without the key ring (the
metrics exporter and the doctor need no secret): refused (Metrica answered 401/403; paused; or Yandex's
user info refused it when it was added), expired,
near expiry (``token_warning_days``). Also the logins quotas count under, for the quota views."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import orjson
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from worker.accounts.crypto import KeyRing
from worker.accounts.reading import read_documents
from worker.accounts.snapshot import login_key
from worker.accounts.store import clear_view
from worker.dataplane.keys import Keys

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

PREFIX = "calltrack"
STATES = ("refused", "expired", "near_expiry")
REFUSED_AT_DOOR = "Yandex's user info refused the token when it was added (401/403)"


@dataclass(frozen=True, slots=True)
class TokenRow:
    account: str
    token: str
    fingerprint: str
    login: str | None
    expires_at: float | None
    check: str | None = None  # "refused" / "unchecked" by Yandex's user info when the token was added


@dataclass(frozen=True, slots=True)
class TokenProblem:
    """A token that needs a person: ``state`` is refused, expired or near_expiry."""

    account: str
    token: str
    fingerprint: str
    state: str
    detail: str

    def line(self) -> str:
        return f"account {self.account}: token {self.token} ({self.fingerprint}) {self.state}: {self.detail}"


def token_rows(redis: Redis, keys: Keys) -> list[TokenRow]:
    rows = []
    for raw in cast(list[str], redis.hvals(keys.accounts)):
        doc = orjson.loads(raw)
        for t in doc.get("tokens", []):
            rows.append(TokenRow(doc["id"], t["name"], t["fp"], t.get("login"), t.get("expires_at"), t.get("check")))
    return sorted(rows, key=lambda r: (r.account, r.token))


def paused_tokens(redis: Redis, keys: Keys) -> dict[str, str]:
    """Token fingerprint -> why Metrica refused it (the quota gate's paused hash)."""
    found: dict[str, str] = {}
    for field, value in cast(dict[str, str], redis.hgetall(keys.paused)).items():
        found.setdefault(field.split(":", 1)[0], str(orjson.loads(value).get("reason", ""))[:200])
    return found


def problems(redis: Redis, keys: Keys, warning_days: float, *, now: float | None = None) -> list[TokenProblem]:
    now = time.time() if now is None else now
    paused = paused_tokens(redis, keys)
    found = []
    for row in token_rows(redis, keys):
        if row.fingerprint in paused:
            found.append(TokenProblem(row.account, row.token, row.fingerprint, "refused", paused[row.fingerprint]))
        elif row.check == "refused":
            detail = REFUSED_AT_DOOR
            found.append(TokenProblem(row.account, row.token, row.fingerprint, "refused", detail))
        elif row.expires_at is not None and row.expires_at <= now:
            found.append(TokenProblem(row.account, row.token, row.fingerprint, "expired", "expired"))
        elif row.expires_at is not None and row.expires_at - now < warning_days * 86_400:
            days = (row.expires_at - now) / 86_400
            detail = f"expires in {days:.1f} days"
            found.append(TokenProblem(row.account, row.token, row.fingerprint, "near_expiry", detail))
    return found


def quota_logins(redis: Redis, keys: Keys) -> dict[str, str]:
    """The name each registry token's quota counts under -> its token fingerprint."""
    return {login_key(r.login, r.fingerprint): r.fingerprint for r in token_rows(redis, keys)}


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
