"""Today's environment variables, imported at start as the account ``env`` (idempotent: an unchanged
environment changes nothing). CALLTRACK_METRICA_TOKEN stays the default for counters in no account.

At start every process also learns, once, the Yandex login of each token given in the environment (a
login is not a secret: kept in clear beside the fingerprint, ``{acct}:logins``), so two such tokens of
one login share its quotas with or without a key ring; and says which accounts it cannot read."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from pydantic import SecretStr

from worker.accounts.model import Account, CounterIn, Telephony, Token
from worker.accounts.registry import ENV_ACCOUNT, Change, Registry
from worker.dataplane.ids import fingerprint

if TYPE_CHECKING:
    from config.settings import Settings

log = structlog.get_logger(__name__)
__all__ = ["ENV_ACCOUNT", "env_account", "env_tokens", "import_env", "learn_env_logins", "report_unreadable", "start"]


def start(reg: Registry, settings: Settings) -> None:
    """What a worker and the ingestion service do at start: learn the environment tokens' logins, say which
    accounts cannot be read, import the ``env`` account."""
    learn_env_logins(reg, settings)
    report_unreadable(reg)
    import_env(reg, settings)


def env_tokens(settings: Settings) -> list[SecretStr]:
    """The tokens given in the environment: the default and the per-counter ones (no demo token)."""
    found = {fingerprint(t): t for t in settings.metrica_counter_tokens.values()}
    if settings.metrica_token is not None:
        found.setdefault(fingerprint(settings.metrica_token), settings.metrica_token)
    return list(found.values())


def learn_env_logins(reg: Registry, settings: Settings) -> int:
    """Ask the user-info endpoint for the login of each environment token whose login is not known yet;
    returns how many were learned (a token it refuses keeps counting under its fingerprint)."""
    learned: dict[str, str] = {}
    for token in env_tokens(settings):
        fp = fingerprint(token)
        if fp in learned or reg.known_login(token) is not None:
            continue
        login = reg.learn_login(token)
        if login is not None:
            learned[fp] = login
    if learned:
        reg.learned(learned)
        log.info("env_token_logins_learned", tokens=len(learned))
    return len(learned)


def report_unreadable(reg: Registry) -> None:
    """One error line naming the accounts this process cannot read (ids and reasons, never a secret)."""
    found = reg.unreadable()
    if found:
        log.error(
            "accounts_unreadable",
            accounts=[u.account for u in found],
            reasons=sorted({u.reason for u in found}),
            counters=sum(len(u.counters) for u in found),
            effect="their counters' batches wait; fix CALLTRACK_SECRET_KEYS",
        )


def env_account(reg: Registry, settings: Settings) -> Account | None:
    old = reg.get(ENV_ACCOUNT)
    tokens: dict[str, Token] = {}
    counters = []
    for counter, secret in sorted(settings.metrica_counter_tokens.items()):
        name = "t" + fingerprint(secret)
        if name not in tokens:
            before = old.token(name) if old else None
            login = before.login if before is not None else (reg.known_login(secret) or reg.learn_login(secret))
            tokens[name] = Token(name, secret, None, None, login)
        counters.append(CounterIn(id=counter, token=name))
    telephony = [Telephony("twilio", sid, secret) for sid, secret in sorted(settings.twilio_auth_tokens.items())]
    telephony += [
        Telephony("zadarma", name, secret, settings.zadarma_timezone)
        for name, secret in sorted(settings.zadarma_secrets.items())
    ]
    telephony += [Telephony("mango", name, secret) for name, secret in sorted(settings.mango_accounts.items())]
    if not counters and not telephony:
        return None
    return Account(
        id=ENV_ACCOUNT,
        name="from CALLTRACK_* variables",
        tokens=tuple(tokens.values()),
        counters=tuple(counters),
        telephony=tuple(telephony),
    )


def import_env(reg: Registry, settings: Settings) -> Change | None:
    """Create or update the ``env`` account; without a key ring the variables keep working as before."""
    if not reg.ring.ready:
        return None
    account = env_account(reg, settings)
    if account is None:
        return reg.commit({ENV_ACCOUNT: None}) if reg.get(ENV_ACCOUNT) is not None else None
    # Counters another account took over stay there: the registry wins over the environment.
    owned = {c.id for a in reg.accounts() if a.id != ENV_ACCOUNT for c in a.counters}
    kept = tuple(c for c in account.counters if c.id not in owned)
    account = Account(account.id, account.name, account.tokens, kept, account.telephony)
    change = reg.commit({ENV_ACCOUNT: account})
    if change.count("unchanged") == 0:
        log.info("env_accounts_imported", counters=len(kept), telephony=len(account.telephony))
    return change
