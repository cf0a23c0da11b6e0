"""How an account is kept in Redis: one JSON document per account, secrets encrypted with the key ring.

The document never holds a plain secret; token fingerprints (a 6-byte hash, the label metrics already
use) are kept beside the encrypted token so lookups by fingerprint need no decryption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import SecretStr

from worker.accounts.crypto import KeyRing
from worker.accounts.model import Account, CounterIn, Telephony, Token


def _enc(ring: KeyRing, secret: SecretStr | None) -> str | None:
    return ring.encrypt(secret) if secret is not None else None


def _dec(ring: KeyRing, stored: str | None) -> SecretStr | None:
    return ring.decrypt(stored) if stored else None


def encode(ring: KeyRing, account: Account) -> str:
    doc: dict[str, Any] = {
        "id": account.id,
        "name": account.name,
        "tokens": [
            {
                "name": t.name,
                "token": ring.encrypt(t.value),
                "fp": t.fingerprint,
                "refresh_token": _enc(ring, t.refresh_token),
                "expires_at": t.expires_at,
                "login": t.login,
                "check": t.check,
            }
            for t in account.tokens
        ],
        "counters": [c.settings() for c in account.counters],
        "telephony": [
            {"provider": t.provider, "account": t.account, "secret": _enc(ring, t.secret), "timezone": t.timezone}
            for t in account.telephony
        ],
        "updated_at": account.updated_at,
    }
    if account.webhook_url:
        doc["webhook"] = {"url": account.webhook_url, "secret": _enc(ring, account.webhook_secret)}
        if account.webhook_previous is not None:  # a rotation: the previous secret signs too until then
            doc["webhook"]["previous"] = _enc(ring, account.webhook_previous)
            doc["webhook"]["previous_until"] = account.webhook_previous_until
    return orjson.dumps(doc).decode()


def decode(ring: KeyRing, raw: str) -> Account:
    doc = orjson.loads(raw)
    return Account(
        id=doc["id"],
        name=doc.get("name", ""),
        tokens=tuple(
            Token(
                name=t["name"],
                value=ring.decrypt(t["token"]),
                refresh_token=_dec(ring, t.get("refresh_token")),
                expires_at=t.get("expires_at"),
                login=t.get("login"),
                check=t.get("check"),  # absent in documents of earlier releases: never checked
            )
            for t in doc.get("tokens", [])
        ),
        counters=tuple(CounterIn.model_validate(c) for c in doc.get("counters", [])),
        telephony=tuple(
            Telephony(t["provider"], t["account"], _dec(ring, t.get("secret")), t.get("timezone"))
            for t in doc.get("telephony", [])
        ),
        updated_at=float(doc.get("updated_at") or 0),
        webhook_url=(doc.get("webhook") or {}).get("url"),
        webhook_secret=_dec(ring, (doc.get("webhook") or {}).get("secret")),
        webhook_previous=_dec(ring, (doc.get("webhook") or {}).get("previous")),
        webhook_previous_until=float((doc.get("webhook") or {}).get("previous_until") or 0),
    )


@dataclass(frozen=True, slots=True)
class ClearView:
    """What a stored document tells without the key ring: its id, counters and its tokens' logins."""

    id: str
    name: str
    counters: tuple[int, ...]
    logins: dict[str, str]  # token fingerprint -> Yandex login (not secrets)


def clear_view(raw: str) -> ClearView:
    """The document's clear parts; ``ValueError`` when it is not a readable account document."""
    try:
        doc = orjson.loads(raw)
        return ClearView(
            id=str(doc["id"]),
            name=str(doc.get("name", "")),
            counters=tuple(int(c["id"]) for c in doc.get("counters", [])),
            logins={str(t["fp"]): str(t["login"]) for t in doc.get("tokens", []) if t.get("login")},
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError("not an account document") from error


def rotate(ring: KeyRing, raw: str) -> str:
    """The same document with every secret re-encrypted under the first key."""
    doc = orjson.loads(raw)
    for token in doc.get("tokens", []):
        token["token"] = ring.rotate(token["token"])
        if token.get("refresh_token"):
            token["refresh_token"] = ring.rotate(token["refresh_token"])
    for item in doc.get("telephony", []):
        if item.get("secret"):
            item["secret"] = ring.rotate(item["secret"])
    for name in ("secret", "previous"):
        if (doc.get("webhook") or {}).get(name):
            doc["webhook"][name] = ring.rotate(doc["webhook"][name])
    return orjson.dumps(doc).decode()
