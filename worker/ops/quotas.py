"""Metrica's daily quota per login, as ``ctl status``, the console, the fleet view and ``/metrics`` show
it: one pipelined read for every login (no prometheus_client here, so the CLI imports little)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from worker.accounts.health import quota_logins
from worker.accounts.logins import login_key
from worker.dataplane.ids import fingerprint
from worker.delivery.quota import DAY_KEYS, group_counts

if TYPE_CHECKING:
    from redis import Redis

    from config.settings import Settings
    from worker.dataplane.keys import Keys


@dataclass(frozen=True, slots=True)
class LoginQuotaView:
    login: str
    used_today: int
    left_today: int
    left_for_uploads: int
    left_for_polls: int
    in_flight: int
    paused: bool
    used: dict[str, int]  # Metrica's method group (client_read, client_write) -> requests today


def quota_view(redis: Redis, keys: Keys, settings: Settings) -> list[LoginQuotaView]:
    """Quota per login without a full Runtime (the collector has only a client and the keys)."""
    registered = quota_logins(redis, keys)  # login name -> token fingerprint (worker/accounts/)
    default = settings.token_for(0) if settings.metrica_token is not None or settings.uses_emulator else None
    unregistered = {
        fingerprint(t) for t in [*settings.metrica_counter_tokens.values(), *([default] if default else [])]
    }
    learned = cast(dict[str, str], redis.hgetall(keys.token_logins))  # environment tokens' logins
    for fp in unregistered - set(registered.values()):
        registered.setdefault(login_key(learned.get(fp), fp), fp)
    logins: set[str] = set(registered)
    day = time.strftime("%Y%m%d", time.gmtime())
    paused = {p.split(":", 1)[0] for p in cast(list[str], redis.hkeys(keys.paused))}
    # One round trip for every login (a fleet serves thousands), five replies each: each of Metrica's
    # method groups is counted on its own, its key of before issue 24 read while the group's is absent.
    ordered = sorted(logins)
    now_ms = int(time.time() * 1000)
    pipe = redis.pipeline(transaction=False)
    for login in ordered:
        pipe.mget([keys.quota_day_purpose(login, name, day) for name in DAY_KEYS])
        pipe.zcount(keys.quota_inflight(login), now_ms, "+inf")
    replies = pipe.execute() if ordered else []
    daily = settings.quota_daily_per_login
    result = []
    for n, login in enumerate(ordered):
        values, in_flight = replies[2 * n : 2 * n + 2]
        reads, writes = group_counts(values)
        result.append(
            LoginQuotaView(
                login=login,
                used_today=reads + writes,
                left_today=max(daily - reads, 0) + max(daily - writes, 0),
                left_for_uploads=max(daily - writes, 0),
                left_for_polls=max(daily - reads, 0),
                in_flight=int(in_flight),
                paused=bool({login, registered.get(login)} & paused),
                used={"client_read": reads, "client_write": writes},
            )
        )
    return result
