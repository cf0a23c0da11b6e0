"""Tokens of the Yandex ID stand-in: configured account tokens, OAuth-issued tokens, codes, refresh tokens.

Configured tokens (``[[accounts]]``) never expire unless the admin API expires them. Issued tokens belong
to a login, reach that login's counters and expire on the emulator clock. Codes are single use.
"""

from __future__ import annotations

import secrets
import zlib
from dataclasses import dataclass, field
from typing import Any

from emulator.clock import format_iso
from emulator.config import Account

CONFIG_CLIENT = "emulator-config"  # client_id reported for tokens from [[accounts]]


#: Metrica's scopes (API introduction, authorization): read counters, change them, upload offline data
METRICA_SCOPES = frozenset({"metrika:read", "metrika:write", "metrika:offline_data"})


def granted(requested: str | None) -> frozenset[str]:
    """The scopes a token gets: those of ``scope`` (space-separated) the app may have, or all of them
    when the link names none (the app's registered set)."""
    if not requested or not requested.strip():
        return METRICA_SCOPES
    return frozenset(requested.split()) & METRICA_SCOPES


def login_id(login: str) -> str:
    """A stable numeric Yandex uid for a login."""
    return str(1_000_000_000 + zlib.crc32(login.encode()) % 1_000_000_000)


@dataclass
class TokenRecord:
    """One access token; ``expires_at`` None means it never expires."""

    token: str
    login: str
    client_id: str
    created: float
    expires_at: float | None
    source: str  # "config", "oauth" or "admin"
    refresh_token: str | None = None
    scopes: frozenset[str] = METRICA_SCOPES

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def to_admin(self, now: float) -> dict[str, Any]:
        return {
            "token": self.token,
            "login": self.login,
            "client_id": self.client_id,
            "source": self.source,
            "created": format_iso(self.created),
            "expires_at": format_iso(self.expires_at) if self.expires_at is not None else None,
            "expires_in": max(0, int(self.expires_at - now)) if self.expires_at is not None else None,
            "expired": self.expired(now),
            "has_refresh_token": self.refresh_token is not None,
            "scopes": sorted(self.scopes),
        }


@dataclass
class Code:
    code: str
    client_id: str
    login: str
    redirect_uri: str | None
    expires_at: float
    scopes: frozenset[str] = METRICA_SCOPES


@dataclass
class RefreshRecord:
    refresh_token: str
    client_id: str
    login: str
    expires_at: float
    scopes: frozenset[str] = METRICA_SCOPES


@dataclass
class TokenStore:
    """All tokens; logins map to the counters of their configured accounts."""

    tokens: dict[str, TokenRecord] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    refresh: dict[str, RefreshRecord] = field(default_factory=dict)
    login_counters: dict[str, frozenset[int] | None] = field(default_factory=dict)

    def load(self, accounts: tuple[Account, ...], created: float) -> None:
        """Forget everything and start from the configured accounts."""
        self.tokens.clear()
        self.codes.clear()
        self.refresh.clear()
        self.login_counters.clear()
        for account in accounts:
            scopes = METRICA_SCOPES if account.scopes is None else account.scopes
            record = TokenRecord(account.token, account.login, CONFIG_CLIENT, created, None, "config", scopes=scopes)
            self.tokens[account.token] = record
            known = self.login_counters.get(account.login, frozenset())
            if account.counters is None or known is None:
                self.login_counters[account.login] = None
            else:
                self.login_counters[account.login] = known | account.counters

    def logins(self) -> list[str]:
        return sorted(self.login_counters)

    def account(self, record: TokenRecord) -> Account:
        """The Account a token acts as: its login with every counter that login reaches."""
        return Account(record.token, record.login, self.login_counters.get(record.login, frozenset()))

    def issue(
        self,
        login: str,
        client_id: str,
        now: float,
        lifetime: float | None,
        source: str,
        with_refresh: bool,
        scopes: frozenset[str] = METRICA_SCOPES,
    ) -> TokenRecord:
        token = "y0_" + secrets.token_urlsafe(32)
        expires_at = now + lifetime if lifetime is not None else None
        record = TokenRecord(token, login, client_id, now, expires_at, source, scopes=scopes)
        if with_refresh:
            refresh_token = "1:" + secrets.token_urlsafe(32)
            record.refresh_token = refresh_token
            self.refresh[refresh_token] = RefreshRecord(
                refresh_token, client_id, login, expires_at or float("inf"), scopes
            )
        self.tokens[token] = record
        self.login_counters.setdefault(login, frozenset())
        return record

    def new_code(
        self,
        client_id: str,
        login: str,
        redirect_uri: str | None,
        expires_at: float,
        scopes: frozenset[str] = METRICA_SCOPES,
    ) -> str:
        code = str(secrets.randbelow(9_000_000) + 1_000_000)
        while code in self.codes:
            code = str(secrets.randbelow(9_000_000) + 1_000_000)
        self.codes[code] = Code(code, client_id, login, redirect_uri, expires_at, scopes)
        return code

    def take_code(self, code: str) -> Code | None:
        """Single use: the code is gone after this, whatever the outcome."""
        return self.codes.pop(code, None)

    def take_refresh(self, refresh_token: str) -> RefreshRecord | None:
        """Single use: a refreshed refresh token is replaced by a new one."""
        return self.refresh.pop(refresh_token, None)

    def expire(self, token: str, now: float, with_refresh: bool = False) -> TokenRecord | None:
        """The token stops working now; its refresh token keeps working unless ``with_refresh``."""
        record = self.tokens.get(token)
        if record is not None:
            record.expires_at = now
            if with_refresh and record.refresh_token is not None:
                self.refresh.pop(record.refresh_token, None)
        return record

    def revoke(self, token: str) -> TokenRecord | None:
        record = self.tokens.pop(token, None)
        if record is not None and record.refresh_token is not None:
            self.refresh.pop(record.refresh_token, None)
        return record
