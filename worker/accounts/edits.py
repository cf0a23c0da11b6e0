"""Single changes on top of the registry: one counter, one token, an account's name. Each reads the
account, changes it in memory and commits it (one transaction); bad input stores nothing."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from worker.accounts.model import Account, AccountIn, CounterIn, Telephony, TelephonyIn, TokenIn, parse
from worker.accounts.registry import Change, Registry
from worker.errors import AccountInputError


def _account(reg: Registry, account_id: str) -> Account:
    account = reg.get(account_id)
    if account is None:
        raise AccountInputError("account", f"no account {account_id!r}")
    return account


def owner_of(reg: Registry, counter_id: int) -> Account:
    owner = reg.owner_id(counter_id)
    account = reg.get(owner) if owner else None
    if account is None:
        raise AccountInputError("counter", f"counter {counter_id} is in no account")
    return account


def create(reg: Registry, data: dict[str, Any]) -> Change:
    spec = parse(AccountIn, data)
    if reg.get(spec.id) is not None:
        raise AccountInputError("id", f"account {spec.id!r} exists already (use update)")
    return reg.put(spec)


def update(reg: Registry, account_id: str, data: dict[str, Any]) -> Change:
    """Change the given top-level fields (``name``, ``tokens``, ``counters``, ``telephony``, ``webhook_url``,
    ``webhook_secret``; ``"webhook_url": null`` removes the webhook) of an account."""
    if "id" in data and data["id"] != account_id:
        raise AccountInputError("id", "cannot be changed")
    account = _account(reg, account_id)
    merged = {**_as_input(account), **data, "id": account_id}
    return reg.put(parse(AccountIn, merged))


def _as_input(account: Account) -> dict[str, Any]:
    """The account as input without its secrets (they are kept by name)."""
    return {
        "id": account.id,
        "name": account.name,
        "tokens": [{"name": t.name} for t in account.tokens],
        "counters": [c.model_dump(exclude_none=True) for c in account.counters],
        "telephony": [
            {"provider": t.provider, "account": t.account, **({"timezone": t.timezone} if t.timezone else {})}
            for t in account.telephony
        ],
        **({"webhook_url": account.webhook_url} if account.webhook_url else {}),
    }


def add_counter(reg: Registry, account_id: str, data: dict[str, Any]) -> Change:
    account = _account(reg, account_id)
    counter = parse(CounterIn, data)
    if any(c.id == counter.id for c in account.counters):
        raise AccountInputError("id", f"counter {counter.id} is already in account {account_id!r}")
    if counter.token is not None and account.token(counter.token) is None:
        raise AccountInputError("token", f"account {account_id!r} has no token {counter.token!r}")
    return reg.commit({account.id: replace(account, counters=(*account.counters, counter))})


def update_counter(reg: Registry, counter_id: int, data: dict[str, Any]) -> Change:
    account = owner_of(reg, counter_id)
    if "id" in data and data["id"] != counter_id:
        raise AccountInputError("id", "cannot be changed")
    counters = []
    for counter in account.counters:
        changed = counter
        if counter.id == counter_id:
            changed = parse(CounterIn, {**counter.model_dump(exclude_none=True), **data, "id": counter_id})
            if changed.token is not None and account.token(changed.token) is None:
                raise AccountInputError("token", f"account {account.id!r} has no token {changed.token!r}")
        counters.append(changed)
    return reg.commit({account.id: replace(account, counters=tuple(counters))})


def remove_counter(reg: Registry, counter_id: int) -> Change:
    account = owner_of(reg, counter_id)
    return reg.commit({account.id: replace(account, counters=tuple(c for c in account.counters if c.id != counter_id))})


def set_token(reg: Registry, account_id: str, data: dict[str, Any], *, login: str | None = None) -> Change:
    """Add a token to an account or replace the one of that name (a rotation: the next upload uses it)."""
    account = _account(reg, account_id)
    given = parse(TokenIn, data)
    if given.token is None:
        raise AccountInputError("token", "is required")
    before = account.token(given.name)
    token = reg.token_from_input(given, before, "token")
    if login is not None:
        token = replace(token, login=login)
    if before is None:
        tokens = (*account.tokens, token)
    else:
        tokens = tuple(token if t.name == given.name else t for t in account.tokens)
    return reg.commit({account.id: replace(account, tokens=tokens)})


def remove_token(reg: Registry, account_id: str, name: str) -> Change:
    account = _account(reg, account_id)
    if account.token(name) is None:
        raise AccountInputError("token", f"account {account_id!r} has no token {name!r}")
    if any(c.token == name for c in account.counters):
        raise AccountInputError("token", f"counters of account {account_id!r} use token {name!r}")
    return reg.commit({account.id: replace(account, tokens=tuple(t for t in account.tokens if t.name != name))})


def set_telephony(reg: Registry, account_id: str, data: dict[str, Any]) -> Change:
    """Add a telephony account or change one (its secret kept when none is given)."""
    account = _account(reg, account_id)
    given = parse(TelephonyIn, data)
    before = next((t for t in account.telephony if (t.provider, t.account) == (given.provider, given.account)), None)
    secret = given.secret or (before.secret if before else None)
    if secret is None:
        raise AccountInputError("secret", "is required for a new telephony account")
    owner = reg.telephony(given.provider, given.account)
    if before is None and owner is not None:
        raise AccountInputError("account", f"{given.provider} account {given.account!r} is in another account")
    entry = Telephony(given.provider, given.account, secret, given.timezone)
    others = tuple(t for t in account.telephony if t is not before)
    return reg.commit({account.id: replace(account, telephony=(*others, entry))})


def remove_telephony(reg: Registry, account_id: str, provider: str, name: str) -> Change:
    account = _account(reg, account_id)
    kept = tuple(t for t in account.telephony if (t.provider, t.account) != (provider, name))
    if len(kept) == len(account.telephony):
        raise AccountInputError("telephony", f"account {account_id!r} has no {provider} account {name!r}")
    return reg.commit({account.id: replace(account, telephony=kept)})
