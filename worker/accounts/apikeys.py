"""Per-client API keys (issue 22): a key belongs to one account and reaches only its counters.

A key reads ``ctk_<id>_<secret>``: ``id`` is 12 hex characters, public, and names the key's record
in one hash (``{acct}:apikeys``), so checking a key is one ``HGET``; ``secret`` is 32 bytes from
:mod:`secrets` (256 bits). Only the SHA-256 of the whole key is stored: a fast unkeyed hash is enough
for a random 256-bit secret (no dictionary or brute force can find a preimage, unlike a password),
and it needs no server-side pepper that could itself be lost or leaked. Comparison is constant time.

A key is shown once, when it is created or rotated; listings show its name, its public prefix
(``ctk_<id>``), scopes and dates. Scopes: ``ingest`` (the write routes) and ``status`` (the read
routes). Rotating gives the name a new id and secret in one transaction (the old key stops at once);
revoking removes it. A key of an account that no longer exists is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import orjson
from redis.exceptions import WatchError

from worker.errors import AccountError, AccountInputError
from worker.store import redis_now_ms

if TYPE_CHECKING:
    from redis import Redis

    from worker.dataplane.keys import Keys

PREFIX = "ctk_"
SCOPES = ("ingest", "status")
_ID_BYTES = 6
_SECRET_BYTES = 32
_KEY_RE = re.compile(r"ctk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_RETRIES = 20


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key without its secret: what listings show and what a request is checked against."""

    id: str
    account: str
    name: str
    scopes: tuple[str, ...]
    created: int  # ms since the epoch
    rotated: int | None = None

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.id}"

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prefix": self.prefix,
            "scopes": list(self.scopes),
            "created": self.created,
            "rotated": self.rotated,
        }


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: ``key`` is shown once and never stored."""

    record: ApiKey
    key: str

    def public(self) -> dict[str, Any]:
        return {"account": self.record.account, **self.record.public(), "key": self.key}


def parse_scopes(value: Iterable[str] | str) -> tuple[str, ...]:
    """``ingest``, ``status`` or both (a list, or one comma-separated text); anything else is refused."""
    items = value.split(",") if isinstance(value, str) else list(value)
    scopes = {str(item).strip() for item in items if str(item).strip()}
    if not scopes or not scopes <= set(SCOPES):
        raise AccountInputError("scopes", f"must be one or more of {', '.join(SCOPES)} (comma-separated)")
    return tuple(s for s in SCOPES if s in scopes)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise AccountInputError("name", "must be 1 to 64 letters, digits, '.', '_' or '-'")
    return name


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _new_secret() -> tuple[str, str]:
    """A fresh public id and the whole key."""
    key_id = secrets.token_hex(_ID_BYTES)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"


def _decode(key_id: str, raw: str | bytes) -> tuple[ApiKey, str]:
    data = orjson.loads(raw)
    record = ApiKey(
        id=key_id,
        account=str(data["account"]),
        name=str(data["name"]),
        scopes=tuple(data.get("scopes") or ()),
        created=int(data.get("created") or 0),
        rotated=int(data["rotated"]) if data.get("rotated") else None,
    )
    return record, str(data.get("sha256", ""))


def _encode(record: ApiKey, key: str) -> bytes:
    return orjson.dumps(
        {
            "account": record.account,
            "name": record.name,
            "scopes": list(record.scopes),
            "sha256": _digest(key),
            "created": record.created,
            "rotated": record.rotated,
        }
    )


class ApiKeys:
    """Create, list, rotate, revoke and check client API keys (one hash, one transaction per change)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    # --- reading -----------------------------------------------------------------------------
    def check(self, given: str) -> ApiKey | None:
        """The key's record when ``given`` is a live key; None otherwise (one ``HGET``)."""
        match = _KEY_RE.fullmatch(given)
        if match is None:
            return None
        raw = cast(str | None, self.redis.hget(self.keys.api_keys, match.group(1)))
        if raw is None:
            return None
        record, digest = _decode(match.group(1), raw)
        if not hmac.compare_digest(digest.encode(), _digest(given).encode()):
            return None
        if not self.redis.hexists(self.keys.accounts, record.account):
            return None  # the account was removed: its keys reach nothing
        return record

    def listing(self, account: str) -> list[ApiKey]:
        self._require_account(account)
        return sorted(self._of(account, self._all()), key=lambda r: r.name)

    # --- writing -----------------------------------------------------------------------------
    def create(self, account: str, scopes: Iterable[str] | str, name: str = "default") -> NewKey:
        chosen, name = parse_scopes(scopes), check_name(name)

        def change(current: dict[str, ApiKey]) -> tuple[str | None, NewKey]:
            if any(r.name == name for r in self._of(account, current)):
                raise AccountInputError("name", f"{name!r} is taken in this account: rotate or revoke that key")
            key_id, key = _new_secret()
            return None, NewKey(ApiKey(key_id, account, name, chosen, self._now_ms()), key)

        return self._commit(account, change)

    def rotate(self, account: str, name: str) -> NewKey:
        def change(current: dict[str, ApiKey]) -> tuple[str | None, NewKey]:
            old = self._named(account, name, current)
            key_id, key = _new_secret()
            record = ApiKey(key_id, account, name, old.scopes, old.created, self._now_ms())
            return old.id, NewKey(record, key)

        return self._commit(account, change)

    def revoke(self, account: str, name: str) -> ApiKey:
        self._require_account(account)
        for _ in range(_RETRIES):
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(self.keys.api_keys)  # type: ignore[no-untyped-call]
                    old = self._named(account, name, self._all(pipe))
                    pipe.multi()
                    pipe.hdel(self.keys.api_keys, old.id)
                    pipe.execute()
                    return old
                except WatchError:
                    continue
        raise AccountError("api keys: too many concurrent changes, try again")

    # --- helpers -----------------------------------------------------------------------------
    def _commit(self, account: str, change: Callable[[dict[str, ApiKey]], tuple[str | None, NewKey]]) -> NewKey:
        """Apply ``change(current) -> (id to drop, new key)`` in one WATCH/MULTI transaction."""
        for _ in range(_RETRIES):
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(self.keys.api_keys, self.keys.accounts)  # type: ignore[no-untyped-call]
                    if not pipe.hexists(self.keys.accounts, account):
                        raise AccountInputError("account", f"no account {account!r}")
                    drop, new = change(self._all(pipe))
                    pipe.multi()
                    if drop is not None:
                        pipe.hdel(self.keys.api_keys, drop)
                    pipe.hset(self.keys.api_keys, new.record.id, _encode(new.record, new.key))
                    pipe.execute()
                    return new
                except WatchError:
                    continue
        raise AccountError("api keys: too many concurrent changes, try again")

    def _all(self, client: Any = None) -> dict[str, ApiKey]:
        raw = cast(dict[str, str], (client or self.redis).hgetall(self.keys.api_keys))
        return {key_id: _decode(key_id, value)[0] for key_id, value in raw.items()}

    @staticmethod
    def _of(account: str, current: dict[str, ApiKey]) -> list[ApiKey]:
        return [r for r in current.values() if r.account == account]

    def _named(self, account: str, name: str, current: dict[str, ApiKey]) -> ApiKey:
        found = next((r for r in self._of(account, current) if r.name == name), None)
        if found is None:
            raise AccountInputError("name", f"account {account!r} has no key named {name!r}")
        return found

    def _require_account(self, account: str) -> None:
        if not self.redis.hexists(self.keys.accounts, account):
            raise AccountInputError("account", f"no account {account!r}")

    def _now_ms(self) -> int:
        return redis_now_ms(self.redis)
