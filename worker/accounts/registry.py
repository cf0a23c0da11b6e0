"""The account registry in Redis, read through a short per-process cache and changed at run time.

Every change is one optimistic transaction (WATCH the accounts and the counter index, then MULTI) that
also bumps ``{acct}:version``; a process reloads its copy when it sees a new version, at most
``accounts_cache_seconds`` after the change, so no worker needs a restart. A counter belongs to one
account; a counter removed from the registry is remembered (``{acct}:removed``) so its batches wait,
visible, instead of going out with the deployment's default token. So do the batches of a counter whose
account this process cannot read (no key ring, a wrong key): never another account's token, nor the default.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

import structlog
from pydantic import SecretStr
from redis import Redis
from redis.exceptions import WatchError

from worker.accounts import store
from worker.accounts.crypto import KeyRing
from worker.accounts.logins import login_key, safe_login
from worker.accounts.model import Account, AccountIn, CounterIn, Telephony, Token, TokenIn
from worker.accounts.reading import Documents, Unreadable, read_documents
from worker.accounts.snapshot import Snapshot
from worker.accounts.webhook import webhook_fields
from worker.dataplane.ids import fingerprint
from worker.dataplane.keys import Keys
from worker.errors import AccountError, AccountInputError, CounterRemovedError, DeferredError, TokenUnreadableError

if TYPE_CHECKING:
    from config.settings import Settings

log = structlog.get_logger(__name__)
REMOVED_RETRY_SECONDS = 600.0
UNREADABLE_RETRY_SECONDS = 300.0
ENV_ACCOUNT = "env"  # the account imported from CALLTRACK_* variables (worker/accounts/envimport.py)
LoginLearner = Callable[[SecretStr], str | None]


@dataclass(frozen=True)
class Change:
    """What a write did: per account id, ``created``, ``updated``, ``unchanged`` or ``removed``; and per
    account written, its tokens that Yandex's user info refused or could not check (name -> check)."""

    outcomes: dict[str, str]
    checks: dict[str, dict[str, str]] = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes.values() if o == outcome)

    def summary(self) -> dict[str, int]:
        return {k: self.count(k) for k in ("created", "updated", "unchanged", "removed")}


class Registry:
    """Reads (cached, by counter / token / provider account) and writes of the account registry."""

    def __init__(
        self, redis: Redis, keys: Keys, settings: Settings, *, learn_login: LoginLearner | None = None
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.ring = KeyRing(settings.secret_keys)
        self._learn_login = learn_login
        self._snap = Snapshot()
        self._checked = 0.0
        self._lock = threading.Lock()

    # --- reading -----------------------------------------------------------------------------
    def stale(self) -> bool:
        """Whether :meth:`snapshot` would ask Redis now."""
        return not self._checked or time.monotonic() - self._checked >= self.settings.accounts_cache_seconds

    def snapshot(self) -> Snapshot:
        """The registry as of at most ``accounts_cache_seconds`` ago."""
        now = time.monotonic()
        if now - self._checked < self.settings.accounts_cache_seconds and self._checked:
            return self._snap
        with self._lock:
            version = cast(str | None, self.redis.get(self.keys.accounts_version)) or ""
            if version != self._snap.version or not self._checked:
                self._snap = self._load()
            self._checked = now
            return self._snap

    def _load(self) -> Snapshot:
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(self.keys.accounts_version)
        pipe.hgetall(self.keys.accounts)
        pipe.hkeys(self.keys.removed_counters)
        pipe.hgetall(self.keys.account_counters)
        pipe.hgetall(self.keys.token_logins)
        version, raw, removed, index, learned = pipe.execute()
        docs = read_documents(self.ring, raw, index)
        logins = {**cast(dict[str, str], learned), **docs.logins}
        return Snapshot.build(version or "", docs.accounts, (int(c) for c in removed), docs.unreadable, logins)

    def token_for(self, counter_id: int, *, removed_ok: bool = False) -> SecretStr | None:
        """The token that uploads to ``counter_id``: its account's; the deployment's default only for a
        counter in no account.

        A counter removed from the registry raises ``CounterRemovedError``, one whose account this process
        cannot read ``TokenUnreadableError``, and one whose account has no token yet a ``DeferredError``
        (their batches wait, visible), unless ``removed_ok``: then None. Never another account's token."""
        snap = self.snapshot()
        found = snap.by_counter.get(counter_id)
        if found is not None:
            token = found[0].token_of(found[1])
            if token is None and not removed_ok:
                # An account without its token yet (added before onboarding): wait, do not quarantine.
                raise DeferredError(
                    f"account {found[0].id!r} has no token for counter {counter_id} yet",
                    retry_after=REMOVED_RETRY_SECONDS,
                )
            return token.value if token is not None else None
        owner = snap.unreadable_counters.get(counter_id)
        if owner is not None:
            own = self.settings.metrica_counter_tokens.get(counter_id)
            if owner == ENV_ACCOUNT and own is not None:
                return own  # the account mirrors this very variable: the counter's own token, not another's
            if removed_ok:
                return None
            raise TokenUnreadableError(
                f"the token of counter {counter_id} (account {owner!r}) cannot be read: "
                f"{snap.unreadable[owner].reason}; its batches wait",
                retry_after=UNREADABLE_RETRY_SECONDS,
            )
        if counter_id in snap.removed:
            if removed_ok:
                return None
            raise CounterRemovedError(
                f"counter {counter_id} was removed from the account registry; its batches wait",
                retry_after=REMOVED_RETRY_SECONDS,
            )
        return self.settings.token_for(counter_id)

    def counter(self, counter_id: int) -> tuple[Account, CounterIn] | None:
        return self.snapshot().by_counter.get(counter_id)

    def goal_name(self, counter_id: int) -> str | None:
        found = self.counter(counter_id)
        return (found[1].goal_name if found else None) or self.settings.new_goal_name

    def login_of(self, token: SecretStr) -> str:
        """The name quotas count under: the token's Yandex login when known, else its fingerprint."""
        fp = fingerprint(token)
        return login_key(self.snapshot().logins.get(fp), fp)

    def known_login(self, token: SecretStr) -> str | None:
        """The token's Yandex login if the registry knows it (no request)."""
        return self.snapshot().logins.get(fingerprint(token))

    def documents(self) -> Documents:
        """Every account, read now (no cache): the readable ones and those this process cannot read."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(self.keys.accounts)
        pipe.hgetall(self.keys.account_counters)
        raw, index = pipe.execute()
        return read_documents(self.ring, raw, index)

    def unreadable(self) -> list[Unreadable]:
        """The accounts this process cannot read, read now (no cache)."""
        return sorted(self.documents().unreadable.values(), key=lambda u: u.account)

    def learned(self, logins: dict[str, str]) -> None:
        """Keep learned logins (token fingerprint -> login, not secrets) in clear; processes reload."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.token_logins, mapping=cast(dict[Any, Any], logins))
        pipe.incr(self.keys.accounts_version)
        pipe.execute()
        self._checked = 0.0

    def owner(self, fp: str) -> tuple[Account, Token] | None:
        """The account and token a token fingerprint belongs to."""
        return self.snapshot().by_fingerprint.get(fp)

    def telephony(self, provider: str, account: str) -> Telephony | None:
        return self.snapshot().by_provider.get((provider, account))

    def telephony_owner(self, provider: str, account: str) -> str | None:
        """The id of the account that registered this telephony account (None: no account did)."""
        return self.snapshot().provider_owner.get((provider, account))

    def tokens(self) -> list[SecretStr]:
        """Every registry token plus the environment's (for quota views and holds)."""
        found = {t.fingerprint: t.value for a in self.snapshot().accounts.values() for t in a.tokens}
        for token in self.settings.metrica_counter_tokens.values():
            found.setdefault(fingerprint(token), token)
        default = self.settings.token_for(0)
        if default is not None:
            found.setdefault(fingerprint(default), default)
        return list(found.values())

    def accounts(self) -> list[Account]:
        """Every account, read now (no cache)."""
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.accounts))
        return sorted((store.decode(self.ring, doc) for doc in raw.values()), key=lambda a: a.id)

    def get(self, account_id: str) -> Account | None:
        raw = cast(str | None, self.redis.hget(self.keys.accounts, account_id))
        return store.decode(self.ring, raw) if raw else None

    def owner_id(self, counter_id: int) -> str | None:
        """The id of the account that holds ``counter_id``, read now."""
        return cast(str | None, self.redis.hget(self.keys.account_counters, str(counter_id)))

    def removed_counters(self) -> list[int]:
        return sorted(int(c) for c in cast(list[str], self.redis.hkeys(self.keys.removed_counters)))

    # --- building an account from input -------------------------------------------------------
    def build(self, spec: AccountIn, old: Account | None) -> Account:
        """The account ``spec`` describes; secrets left out keep their stored values."""
        tokens = []
        for i, given in enumerate(spec.tokens):
            before = old.token(given.name) if old else None
            tokens.append(self.token_from_input(given, before, f"tokens.{i}.token"))
        telephony = []
        for i, tel in enumerate(spec.telephony):
            before_tel = next(
                (t for t in (old.telephony if old else ()) if (t.provider, t.account) == (tel.provider, tel.account)),
                None,
            )
            secret = tel.secret or (before_tel.secret if before_tel else None)
            if secret is None:
                raise AccountInputError(f"telephony.{i}.secret", "is required for a new telephony account")
            telephony.append(Telephony(tel.provider, tel.account, secret, tel.timezone))
        webhook = webhook_fields(spec, old, self.settings) if spec.webhook_url is not None else {}
        return Account(
            id=spec.id,
            name=spec.name,
            tokens=tuple(tokens),
            counters=tuple(spec.counters),
            telephony=tuple(telephony),
            updated_at=old.updated_at if old else 0.0,
            webhook_url=spec.webhook_url,
            **webhook,
        )

    def token_from_input(self, given: TokenIn, before: Token | None, where: str) -> Token:
        if given.token is None:
            if before is None:
                raise AccountInputError(where, "is required for a new token")
            return replace(
                before,
                refresh_token=given.refresh_token or before.refresh_token,
                expires_at=given.expires_at.timestamp() if given.expires_at else before.expires_at,
            )
        same = before is not None and before.value.get_secret_value() == given.token.get_secret_value()
        login, check = (before.login, before.check) if same and before is not None else self.check_token(given.token)
        expires = given.expires_at.timestamp() if given.expires_at else (before.expires_at if same and before else None)
        refresh = given.refresh_token or (before.refresh_token if same and before else None)
        return Token(given.name, given.token, refresh, expires, login, check)

    def learn_login(self, token: SecretStr) -> str | None:
        return self.check_token(token)[0]

    def check_token(self, token: SecretStr) -> tuple[str | None, str | None]:
        """(login, check) from Yandex's user info: check ``refused`` when it answers 401/403, ``unchecked``
        when it could not answer (network, 5xx), None when it answered (or no check is configured)."""
        if self._learn_login is None:
            return None, None
        try:
            return safe_login(self._learn_login(token)), None
        except AccountError as error:
            refused = getattr(error, "status", None) in (401, 403)
            log.warning(
                "token_refused" if refused else "token_login_unknown",
                reason=str(error),
                token_fingerprint=fingerprint(token),
            )
            return None, "refused" if refused else "unchecked"

    # --- writing -----------------------------------------------------------------------------
    def put(self, spec: AccountIn) -> Change:
        """Create or replace one account."""
        return self.commit({spec.id: self.build(spec, self.get(spec.id))})

    def remove(self, account_id: str) -> Change:
        if self.get(account_id) is None:
            raise AccountInputError("account", f"no account {account_id!r}")
        return self.commit({account_id: None})

    def sync(self, specs: list[AccountIn]) -> Change:
        """Make the registry exactly ``specs``: absent accounts are removed; the same input twice
        changes nothing (not even the version)."""
        ids = [s.id for s in specs]
        if len(set(ids)) != len(ids):
            raise AccountInputError("accounts", "each account id may appear once")
        seen: dict[int, str] = {}
        for spec in specs:
            for counter in spec.counters:
                if counter.id in seen:
                    raise AccountInputError(
                        "accounts", f"counter {counter.id} is in both {seen[counter.id]!r} and {spec.id!r}"
                    )
                seen[counter.id] = spec.id
        current = {a.id: a for a in self.accounts()}
        changes: dict[str, Account | None] = {a: None for a in current if a not in ids}
        for spec in specs:
            changes[spec.id] = self.build(spec, current.get(spec.id))
        return self.commit(changes, current=current)

    def commit(self, changes: dict[str, Account | None], current: dict[str, Account] | None = None) -> Change:
        """Write the changed accounts in one transaction; unchanged ones are left alone."""
        current = current if current is not None else {a: acc for a in changes if (acc := self.get(a))}
        outcomes: dict[str, str] = {}
        writes: dict[str, Account | None] = {}
        for account_id, new in changes.items():
            old = current.get(account_id)
            if new is None:
                outcomes[account_id] = "removed"
                writes[account_id] = None
            elif old is not None and old.canonical() == new.canonical():
                outcomes[account_id] = "unchanged"
            else:
                outcomes[account_id] = "updated" if old is not None else "created"
                writes[account_id] = replace(new, updated_at=time.time())
        if writes:
            encoded = {a: store.encode(self.ring, acc) if acc else None for a, acc in writes.items()}
            self._write(writes, encoded)
            self._checked = 0.0
            log.info("accounts_changed", **{k: v for k, v in Change(outcomes).summary().items() if v})
        checks = {
            a: found
            for a, acc in changes.items()
            if acc is not None and (found := {t.name: t.check for t in acc.tokens if t.check})
        }
        return Change(outcomes, checks)

    def _write(self, writes: dict[str, Account | None], encoded: dict[str, str | None]) -> None:
        keys = self.keys
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(keys.accounts, keys.account_counters)  # type: ignore[no-untyped-call]
                    index = cast(dict[str, str], pipe.hgetall(keys.account_counters))
                    dropped = {int(c) for c, owner in index.items() if owner in writes}
                    added: dict[int, str] = {}
                    for account_id, account in writes.items():
                        for counter in account.counters if account else ():
                            owner = index.get(str(counter.id))
                            if owner is not None and owner not in writes:
                                raise AccountInputError(
                                    "counters", f"counter {counter.id} belongs to account {owner!r}"
                                )
                            added[counter.id] = account_id
                    gone = dropped - added.keys()
                    pipe.multi()
                    for account_id, doc in encoded.items():
                        if doc is None:
                            pipe.hdel(keys.accounts, account_id)
                        else:
                            pipe.hset(keys.accounts, account_id, doc)
                    if gone:
                        pipe.hdel(keys.account_counters, *[str(c) for c in gone])
                        now_ms = int(time.time() * 1000)
                        pipe.hset(keys.removed_counters, mapping={str(c): now_ms for c in gone})
                    if added:
                        pipe.hset(keys.account_counters, mapping={str(c): a for c, a in added.items()})
                        pipe.hdel(keys.removed_counters, *[str(c) for c in added])
                    pipe.incr(keys.accounts_version)
                    pipe.execute()
                    return
                except WatchError:
                    continue

    def rekey(self) -> int:
        """Re-encrypt every stored secret with the first key of the ring; returns the accounts done."""
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self.keys.accounts)  # type: ignore[no-untyped-call]
                    raw = cast(dict[str, str], pipe.hgetall(self.keys.accounts))
                    if not raw:
                        return 0
                    rotated: dict[Any, Any] = {a: store.rotate(self.ring, doc) for a, doc in raw.items()}
                    pipe.multi()
                    pipe.hset(self.keys.accounts, mapping=rotated)
                    pipe.incr(self.keys.accounts_version)
                    pipe.execute()
                    break
                except WatchError:
                    continue  # a change came in meanwhile: rotate again, with it
        self._checked = 0.0
        return len(rotated)
