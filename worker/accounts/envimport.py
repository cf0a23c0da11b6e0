"""Today's environment variables, imported at start as the account ``env`` (idempotent: an unchanged
environment changes nothing). CALLTRACK_METRICA_TOKEN stays the default for counters in no account."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from worker.accounts.model import Account, CounterIn, Telephony, Token
from worker.accounts.registry import Change, Registry
from worker.keys import fingerprint

if TYPE_CHECKING:
    from config.settings import Settings

log = structlog.get_logger(__name__)
ENV_ACCOUNT = "env"


def env_account(reg: Registry, settings: Settings) -> Account | None:
    old = reg.get(ENV_ACCOUNT)
    tokens: dict[str, Token] = {}
    counters = []
    for counter, secret in sorted(settings.metrica_counter_tokens.items()):
        name = "t" + fingerprint(secret)
        if name not in tokens:
            before = old.token(name) if old else None
            login = before.login if before is not None else reg.learn_login(secret)
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
