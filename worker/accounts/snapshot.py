"""One process's copy of the account registry (``Snapshot``) and the names quotas count under.

A token's quotas count under its Yandex login (``login.<login>``) when the registry knows it, from an
account's document or learned for a token given in the environment, else under its fingerprint.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from worker.accounts.model import Account, CounterIn, Telephony, Token
from worker.accounts.reading import Unreadable


@dataclass(frozen=True)
class Snapshot:
    """One process's copy of the registry at one version."""

    version: str = ""
    accounts: dict[str, Account] = field(default_factory=dict)
    by_counter: dict[int, tuple[Account, CounterIn]] = field(default_factory=dict)
    by_fingerprint: dict[str, tuple[Account, Token]] = field(default_factory=dict)
    by_provider: dict[tuple[str, str], Telephony] = field(default_factory=dict)
    provider_owner: dict[tuple[str, str], str] = field(default_factory=dict)  # -> account id (issue 22)
    removed: frozenset[int] = frozenset()
    unreadable: dict[str, Unreadable] = field(default_factory=dict)
    unreadable_counters: dict[int, str] = field(default_factory=dict)  # counter -> its unreadable account
    logins: dict[str, str] = field(default_factory=dict)  # token fingerprint -> Yandex login (clear)

    @classmethod
    def build(
        cls,
        version: str,
        accounts: Iterable[Account],
        removed: Iterable[int],
        unreadable: dict[str, Unreadable] | None = None,
        logins: dict[str, str] | None = None,
    ) -> Snapshot:
        unreadable = unreadable or {}
        snap = cls(version=version, removed=frozenset(removed), unreadable=unreadable, logins=dict(logins or {}))
        for item in unreadable.values():
            snap.unreadable_counters.update(dict.fromkeys(item.counters, item.account))
        for account in accounts:
            snap.accounts[account.id] = account
            for counter in account.counters:
                snap.by_counter[counter.id] = (account, counter)
            for token in account.tokens:
                snap.by_fingerprint[token.fingerprint] = (account, token)
                if token.login:
                    snap.logins[token.fingerprint] = token.login
            for tel in account.telephony:
                snap.by_provider[(tel.provider, tel.account)] = tel
                snap.provider_owner[(tel.provider, tel.account)] = account.id
        return snap
