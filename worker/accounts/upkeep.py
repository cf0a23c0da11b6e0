"""Token upkeep (the periodic ``calltrack.token_upkeep`` task) and what is wrong with tokens, per account.

A token is refreshed when it has a refresh token and either expires within ``token_refresh_days`` or
was refused by Metrica (an expired token answers 403 invalid_token). The new token replaces the old one
under the same name, so the next upload uses it and the refused one's pause no longer applies.
Accounts this process cannot read are left alone (their batches wait, see ``Registry.token_for``); the
login of an environment token not learned at start (user info unreachable) is asked for again here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import cast

import structlog

from worker.accounts import oauth
from worker.accounts.envimport import learn_env_logins
from worker.accounts.health import paused_tokens
from worker.accounts.registry import Registry
from worker.errors import AccountError

log = structlog.get_logger(__name__)


@dataclass
class UpkeepResult:
    refreshed: int = 0
    failed: int = 0


def upkeep(reg: Registry, *, now: float | None = None) -> UpkeepResult:
    """Refresh every token that is due (near expiry or refused) and has a refresh token."""
    now = time.time() if now is None else now
    settings = reg.settings
    learn_env_logins(reg, settings)
    soon = settings.token_refresh_days * 86_400
    paused = paused_tokens(reg.redis, reg.keys)
    result = UpkeepResult()
    for account in reg.documents().accounts:
        for token in account.tokens:
            if token.refresh_token is None:
                continue
            due = token.fingerprint in paused or (token.expires_at is not None and token.expires_at - now < soon)
            if not due:
                continue
            try:
                grant = oauth.refresh(settings, token.refresh_token)
            except AccountError as error:
                result.failed += 1
                log.error("token_refresh_failed", account=account.id, token=token.name, reason=str(error))
                continue
            fresh = replace(
                token,
                value=grant.token,
                refresh_token=grant.refresh_token or token.refresh_token,
                expires_at=grant.expires_at,
            )
            current = reg.get(account.id)
            if current is None:
                continue
            tokens = tuple(fresh if t.name == token.name else t for t in current.tokens)
            reg.commit({account.id: replace(current, tokens=tokens)})
            _forget_pause(reg, token.fingerprint)
            result.refreshed += 1
            log.info("token_refreshed", account=account.id, token=token.name, token_fingerprint=fresh.fingerprint)
    return result


def _forget_pause(reg: Registry, fp: str) -> None:
    """The replaced token's pause entries (the new token has a fingerprint of its own)."""
    fields = [f for f in cast(list[str], reg.redis.hkeys(reg.keys.paused)) if f.split(":", 1)[0] == fp]
    if fields:
        reg.redis.hdel(reg.keys.paused, *fields)
