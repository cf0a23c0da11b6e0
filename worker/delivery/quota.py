"""Fleet-wide Metrica quotas: every worker takes a permit from Redis before each request.

Metrica limits a login to 3 requests in flight and 5,000 a day (reset at 00:00 UTC), and an IP to
30 requests a second. ``QuotaGate.permit`` takes one permit under all three in one script, so any
number of workers together stay inside them. The day is split: uploads may spend
``quota_daily_per_login - quota_polling_reserve``, status polling and lookups the reserve, each
counted on its own, so neither can starve the other. The UTC day is Redis's (``TIME``), not a
worker's clock.

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
from typing import TYPE_CHECKING, cast

import orjson
import structlog
from pydantic import SecretStr

from worker.errors import DeferredError
from worker.ids import fingerprint
from worker.store import redis_now_ms

if TYPE_CHECKING:
    from config.settings import Settings
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)


class Purpose(StrEnum):
    """What a request is for; uploads leave the polling reserve untouched."""

    UPLOAD = "upload"
    POLL = "poll"


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
        if purpose is Purpose.UPLOAD:
            limit = s.quota_daily_per_login - s.quota_polling_reserve
        else:
            limit = min(s.quota_polling_reserve, s.quota_daily_per_login)
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
                self._rt.keys.quota_day_purpose(login, purpose.value, day),
            ],
            args=[
                holder,
                permit_lease_ms(s),
                s.quota_parallel_per_login,
                s.quota_requests_per_second,
                max(limit, 0),
                to_midnight,
                s.quota_daily_per_login,
            ],
        )
        if not int(ok):
            self._rt.redis.zrem(rate, holder)  # the IP's slot back: this request is not sent
            raise QuotaExhausted(str(quota), retry_after=int(retry_ms) / 1000)
        return holder, inflight

    def exhaust_day(self, token: SecretStr) -> float:
        """Metrica said the daily quota is spent (other clients share the login): stop until midnight."""
        day, to_midnight = self._day()
        key = self._rt.keys.quota_day(self._rt.accounts.login_of(token), day)
        self._rt.redis.set(key, self._rt.settings.quota_daily_per_login, px=to_midnight + 86_400_000)
        return to_midnight / 1000

    def upload_budget_short(self, token: SecretStr) -> bool:
        """True when the upload part of today's budget is nearly spent: batches should grow."""
        s = self._rt.settings
        day, _ = self._day()
        login = self._rt.accounts.login_of(token)
        used, uploads = self._rt.redis.mget(
            [self._rt.keys.quota_day(login, day), self._rt.keys.quota_day_purpose(login, Purpose.UPLOAD.value, day)]
        )
        upload_budget = max(s.quota_daily_per_login - s.quota_polling_reserve, 1)
        left = min(upload_budget - int(uploads or 0), s.quota_daily_per_login - int(used or 0))
        return left < upload_budget * s.quota_short_fraction

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
            used = int(self._rt.redis.get(self._rt.keys.quota_day(login, day)) or 0)
            upload_share = s.quota_daily_per_login - s.quota_polling_reserve
            uploads = int(self._rt.redis.get(self._rt.keys.quota_day_purpose(login, Purpose.UPLOAD.value, day)) or 0)
            in_flight = int(self._rt.redis.zcard(self._rt.keys.quota_inflight(login)))
            result.append(
                LoginQuota(
                    login=login,
                    counters=sorted(set(counters)),
                    used_today=used,
                    left_today=max(s.quota_daily_per_login - used, 0),
                    left_for_uploads=max(min(upload_share - uploads, s.quota_daily_per_login - used), 0),
                    in_flight=in_flight,
                    paused={k: v for k, v in paused.items() if k.split(":", 1)[0] in (login, fps.get(login))},
                )
            )
        return result


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
