"""The names quotas count under: a token's Yandex login when known (``login.<login>``), else its
fingerprint; never the token."""

from __future__ import annotations


def safe_login(login: str | None) -> str | None:
    """A login usable in key names and labels (Yandex logins are letters, digits, '.', '-')."""
    if not login:
        return None
    login = login.strip().lower()
    if all(c.isalnum() or c in "._-@" for c in login) and 0 < len(login) <= 64:
        return login
    return None


def login_key(login: str | None, fp: str) -> str:
    """The name a token's quotas count under: ``login.<login>`` when known, else its fingerprint."""
    safe = safe_login(login)
    return f"login.{safe}" if safe else fp
