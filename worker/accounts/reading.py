"""Reading the stored account documents with this process's key ring, keeping apart those it cannot read.

An account whose secrets no key of the ring opens (no ``CALLTRACK_SECRET_KEYS``, a wrong key) or whose
document is damaged is *unreadable*: its counters are still known (the counter index and the document's
clear parts), so their batches wait instead of leaving with another token (see ``Registry.token_for``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from worker.accounts import store
from worker.accounts.crypto import KeyRing
from worker.accounts.model import Account
from worker.errors import SecretKeyError

NO_KEY_RING = "CALLTRACK_SECRET_KEYS is not set"
WRONG_KEY = "a stored secret opens with no key of CALLTRACK_SECRET_KEYS"
DAMAGED = "its stored document cannot be read"


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An account this process cannot decrypt: its id, why, and its counters (never a secret)."""

    account: str
    reason: str
    counters: tuple[int, ...]
    name: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"id": self.account, "name": self.name, "reason": self.reason, "counters": list(self.counters)}


@dataclass(frozen=True, slots=True)
class Documents:
    """Every stored account, split into the readable ones and the unreadable ones (by account id)."""

    accounts: list[Account]
    unreadable: dict[str, Unreadable]
    logins: dict[str, str]  # token fingerprint -> Yandex login, from the documents' clear parts


def read_documents(ring: KeyRing, raw: Mapping[str, str], index: Mapping[str, str]) -> Documents:
    """Decode each document of ``raw`` (account id -> JSON); ``index`` is the counter -> account index."""
    accounts: list[Account] = []
    unreadable: dict[str, Unreadable] = {}
    logins: dict[str, str] = {}
    for key, doc in raw.items():
        try:
            view: store.ClearView | None = store.clear_view(doc)
        except ValueError:
            view = None
        if view is not None:
            logins.update(view.logins)
        reason = ""
        if view is None:
            reason = DAMAGED
        elif not ring.ready:
            reason = NO_KEY_RING
        else:
            try:
                accounts.append(store.decode(ring, doc))
            except SecretKeyError:
                reason = WRONG_KEY
            except (KeyError, TypeError, ValueError):
                reason = DAMAGED
        if reason:
            counters = {int(c) for c, owner in index.items() if owner == key}
            counters |= set(view.counters if view is not None else ())
            unreadable[key] = Unreadable(key, reason, tuple(sorted(counters)), view.name if view else "")
    return Documents(sorted(accounts, key=lambda a: a.id), unreadable, logins)
