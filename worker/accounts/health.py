"""What is wrong with tokens, per account, read from the stored documents without the key ring (the
metrics exporter and the doctor need no secret): refused (Metrica answered 401/403; paused; or Yandex's
user info refused it when it was added), expired,
near expiry (``token_warning_days``). Also the logins quotas count under, for the quota views."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import orjson
from redis import Redis

from worker.accounts.logins import login_key
from worker.dataplane.keys import Keys

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
