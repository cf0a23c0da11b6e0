"""Fleet-wide Metrica quotas: every worker takes a permit from Redis before each request.

Metrica limits a login to 3 requests in flight and 5,000 a day (reset at 00:00 UTC), and an IP to
30 requests a second. ``QuotaGate.permit`` takes one permit under all three in one script, so any
number of workers together stay inside them. Metrica counts a login's day separately per group of
methods (quotas page: ``client_read`` reads counter parameters, ``client_write`` saves them); uploads
and setting switches spend ``client_write``, status polls, lists and setting reads ``client_read``,
each ``quota_daily_per_login`` a day, so a busy day of polls never starves uploads. A group's count
starts from the key of the purpose it replaces (``upload``/``poll`` of before issue 24), so a mid-day
upgrade keeps the day's count. The UTC day is Redis's (``TIME``), not a worker's clock.

A login is the Yandex login the account registry learned for the token (worker/accounts/), so two
tokens of one login share its limits; a token whose login is unknown counts under its fingerprint (a
short hash), never the token. A 401/403 pauses the token itself (its fingerprint): a replaced token
resumes at once, and other accounts' tokens are not touched.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

import orjson
import structlog
from pydantic import SecretStr

from worker.dataplane.ids import fingerprint
from worker.errors import DeferredError
from worker.store import redis_now_ms

if TYPE_CHECKING:
    from config.settings import Settings
    from worker.dataplane.keys import Keys
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)


class Purpose(StrEnum):
    """What a request is for; its group (:data:`GROUP`) is the budget it spends."""

    UPLOAD = "upload"  # post a file
    POLL = "poll"  # status, upload lists
    READ = "read"  # counter settings, join thresholds, goals, counters list
    WRITE = "write"  # switch an option on, create a goal


#: purpose -> (Metrica's method group, the purpose key of before issue 24 the group's count carries on)
GROUP = {
    Purpose.UPLOAD: ("client_write", "upload"),
    Purpose.WRITE: ("client_write", "upload"),
    Purpose.POLL: ("client_read", "poll"),
    Purpose.READ: ("client_read", "poll"),
}
GROUPS = ("client_read", "client_write")


class QuotaExhausted(DeferredError):
    """No permit now; ``quota`` names which limit (parallel, rate, daily)."""

    def __init__(self, quota: str, retry_after: float) -> None:
        super().__init__(f"Metrica quota '{quota}' has no room now", retry_after=retry_after)
        self.quota = quota


class UploadsPaused(DeferredError):
    """Metrica refused this token (401/403); its uploads wait until the token is replaced."""


def permit_lease_ms(s: Settings) -> int:
    """A permit's lease: past the upload task's hard time limit (90% of the lock's lease), so a
    permit of a task killed mid-request is never handed out while that request may be in flight."""
    one_request = s.http_connect_timeout + s.http_read_timeout + s.http_write_timeout
    return int(max(one_request, s.upload_lock_seconds) * 1000)


class QuotaGate:
    """Permits for Metrica requests, shared through Redis by every worker process."""

    def __init__(self, rt: Runtime, *, clock: Callable[[], datetime] | None = None) -> None:
        self._rt = rt
        self._clock = clock or (lambda: datetime.fromtimestamp(redis_now_ms(rt.redis) / 1000, UTC))

    def _day(self) -> tuple[str, int]:
        now = self._clock()
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return now.strftime("%Y%m%d"), max(1, int((midnight - now).total_seconds() * 1000))

    @contextmanager
    def permit(self, token: SecretStr, purpose: Purpose, *, wait: float = 0.0) -> Iterator[None]:
        """Hold a permit for one request. A permit due within ``wait`` seconds is waited for (a
        blocking acquire, like a semaphore's); otherwise ``QuotaExhausted`` says when to come back."""
        deadline = time.monotonic() + wait
        while True:
            try:
                holder, inflight = self._acquire(token, purpose)
                break
            except QuotaExhausted as error:
                left = deadline - time.monotonic()
                if error.quota == "daily" or error.retry_after > left:
                    raise
                time.sleep(error.retry_after)
        try:
            yield
        finally:
            self._rt.redis.zrem(inflight, holder)

    def _acquire(self, token: SecretStr, purpose: Purpose) -> tuple[str, str]:
        s = self._rt.settings
        login = self._rt.accounts.login_of(token)
        day, to_midnight = self._day()
        group, legacy = GROUP[purpose]
        holder = uuid.uuid4().hex
        inflight = self._rt.keys.quota_inflight(login)
        rate = self._rt.keys.quota_rate(s.egress_id)
        ok, quota, retry_ms = self._rt.scripts.quota_rate(keys=[rate], args=[holder, s.quota_requests_per_second])
        if not int(ok):
            raise QuotaExhausted(str(quota), retry_after=int(retry_ms) / 1000)
        ok, quota, retry_ms = self._rt.scripts.quota_acquire(
            keys=[
                inflight,
                self._rt.keys.quota_day(login, day),
                self._rt.keys.quota_day_purpose(login, group, day),
                self._rt.keys.quota_day_purpose(login, legacy, day),
            ],
            args=[
                holder,
                permit_lease_ms(s),
                s.quota_parallel_per_login,
                s.quota_requests_per_second,
                s.quota_daily_per_login,
                to_midnight,
                0,
            ],
        )
        if not int(ok):
            self._rt.redis.zrem(rate, holder)  # the IP's slot back: this request is not sent
            raise QuotaExhausted(str(quota), retry_after=int(retry_ms) / 1000)
        return holder, inflight

    def exhaust_day(self, token: SecretStr, purpose: Purpose = Purpose.UPLOAD) -> float:
        """Metrica said the daily quota is spent (other clients share the login): the purpose's group
        stops until midnight."""
        day, to_midnight = self._day()
        key = self._rt.keys.quota_day_purpose(self._rt.accounts.login_of(token), GROUP[purpose][0], day)
        self._rt.redis.set(key, self._rt.settings.quota_daily_per_login, px=to_midnight + 86_400_000)
        return to_midnight / 1000

    def upload_budget_short(self, token: SecretStr) -> bool:
        """True when the upload group's budget today is nearly spent: batches should grow."""
        s = self._rt.settings
        day, _ = self._day()
        left = (
            s.quota_daily_per_login
            - group_used(self._rt.redis, self._rt.keys, self._rt.accounts.login_of(token), day)[1]
        )
        return left < s.quota_daily_per_login * s.quota_short_fraction

    # --- 401/403 -----------------------------------------------------------------------------
    def pause(self, token: SecretStr, counter_id: int | None, reason: str) -> None:
        """Stop uploads of a token (or of one counter under it) until the token is replaced."""
        field = fingerprint(token) if counter_id is None else f"{fingerprint(token)}:{counter_id}"
        value = orjson.dumps({"reason": reason[:500], "since": self._clock().isoformat()})
        if self._rt.redis.hset(self._rt.keys.paused, field, value):
            log.error("uploads_paused", login=fingerprint(token), paused_counter=counter_id, reason=reason[:500])

    def check_paused(self, token: SecretStr, counter_id: int) -> None:
        login = fingerprint(token)
        reasons = self._rt.redis.hmget(self._rt.keys.paused, [login, f"{login}:{counter_id}"])
        for raw in reasons:
            if raw:
                reason = orjson.loads(raw)["reason"]
                raise UploadsPaused(f"uploads are paused for this token: {reason}", retry_after=300)

    def resume(self, field: str) -> bool:
        return bool(self._rt.redis.hdel(self._rt.keys.paused, field))

    # --- view ----------------------------------------------------------------------------------
    def view(self) -> list[LoginQuota]:
        """What each configured login has left today."""
        s = self._rt.settings
        day, _ = self._day()
        logins: dict[str, list[int]] = {self._rt.accounts.login_of(t): [] for t in self._rt.accounts.tokens()}
        for counter, token in s.metrica_counter_tokens.items():
            logins.setdefault(self._rt.accounts.login_of(token), []).append(counter)
        for account in self._rt.accounts.snapshot().accounts.values():
            for item in account.counters:
                if (owned := account.token_of(item)) is not None:
                    logins.setdefault(self._rt.accounts.login_of(owned.value), []).append(item.id)
        fps = {self._rt.accounts.login_of(t): fingerprint(t) for t in self._rt.accounts.tokens()}
        raw_paused = cast(dict[str, str], self._rt.redis.hgetall(self._rt.keys.paused))
        paused = {k: str(orjson.loads(v)["reason"]) for k, v in raw_paused.items()}
        result = []
        for login, counters in sorted(logins.items()):
            reads, writes = group_used(self._rt.redis, self._rt.keys, login, day)
            in_flight = int(self._rt.redis.zcard(self._rt.keys.quota_inflight(login)))
            result.append(
                LoginQuota(
                    login=login,
                    counters=sorted(set(counters)),
                    used_today=reads + writes,
                    left_today=max(s.quota_daily_per_login - writes, 0) + max(s.quota_daily_per_login - reads, 0),
                    left_for_uploads=max(s.quota_daily_per_login - writes, 0),
                    used={"client_read": reads, "client_write": writes},
                    in_flight=in_flight,
                    paused={k: v for k, v in paused.items() if k.split(":", 1)[0] in (login, fps.get(login))},
                )
            )
        return result


#: each group's day key, then the purpose key of before issue 24 it carries on
DAY_KEYS = ("client_read", "poll", "client_write", "upload")


def group_counts(values: list[Any]) -> tuple[int, int]:
    """(client_read, client_write) from the values of :data:`DAY_KEYS`: a group not counted yet counts
    as the purpose it replaces."""
    read, poll, write, upload = (int(v) if v is not None else None for v in values)
    return (read if read is not None else poll or 0), (write if write is not None else upload or 0)


def group_used(redis: Any, keys: Keys, login: str, day: str) -> tuple[int, int]:
    """Requests of ``login`` on ``day`` per group (client_read, client_write)."""
    return group_counts(redis.mget([keys.quota_day_purpose(login, name, day) for name in DAY_KEYS]))


@dataclass(frozen=True, slots=True)
class LoginQuota:
    """One login's quota use today."""

    login: str
    counters: list[int]
    used_today: int
    left_today: int
    left_for_uploads: int
    in_flight: int
    paused: dict[str, str]
    used: dict[str, int]  # Metrica's method group -> requests today
