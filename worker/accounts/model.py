"""What an account is: its input form (validated, with the clear errors of ``AccountInputError``) and the
decrypted form the rest of the worker reads. Secrets are ``SecretStr`` everywhere; ``public()`` has none."""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from worker.dataplane.ids import fingerprint
from worker.errors import AccountInputError
from worker.model.phones import normalize_phone

ACCOUNT_ID = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
TOKEN_NAME = r"^[A-Za-z0-9_.-]{1,32}$"  # noqa: S105 - a pattern, not a secret
PROVIDER_ACCOUNT = r"^[A-Za-z0-9_.:-]{1,64}$"
Provider = Literal["twilio", "zadarma", "mango"]
WHSEC_PREFIX = "whsec_"  # Standard Webhooks' secret form: the rest is the base64 of the key bytes


def _zone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ValueError, ZoneInfoNotFoundError):
        raise ValueError("must be an IANA time zone name, as Europe/Moscow or UTC") from None
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenIn(_Strict):
    """An OAuth token. Without ``token``, the stored token of that name is kept (with its refresh token)."""

    name: Annotated[str, Field(pattern=TOKEN_NAME)] = "main"
    token: SecretStr | None = None
    refresh_token: SecretStr | None = None
    expires_at: datetime | None = None

    @field_validator("token", "refresh_token")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        if value is not None and any(c.isspace() for c in value.get_secret_value()):
            raise ValueError("must not contain white space")
        return value

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a time zone, as 2027-01-31T00:00:00Z")
        return value


class CounterIn(_Strict):
    """A Metrica counter of the account, with its own settings (None: the deployment's default)."""

    id: Annotated[int, Field(gt=0, lt=2**63)]
    token: Annotated[str | None, Field(pattern=TOKEN_NAME)] = None
    goal_name: Annotated[str | None, Field(min_length=1, max_length=255)] = None
    flush_age: Annotated[float | None, Field(gt=0, le=86_400)] = None
    phone_region: Annotated[str | None, Field(pattern=r"^[A-Z]{2}$")] = None
    timezone: str | None = None
    #: The site tag (ingest/static/tag.js): the static numbers the site shows, which it swaps for a pool
    #: number (empty: the counter's fallback number), or a CSS selector of the elements that show it.
    site_numbers: list[str] = Field(default_factory=list, max_length=20)
    site_selector: Annotated[str | None, Field(min_length=1, max_length=200)] = None

    _zone = field_validator("timezone")(classmethod(lambda cls, v: _zone(v)))

    @field_validator("site_numbers")
    @classmethod
    def _site_numbers(cls, value: list[str], info: ValidationInfo) -> list[str]:
        region = info.data.get("phone_region")
        numbers = [normalize_phone(v, region) for v in value]
        if None in numbers or (not region and any(not v.strip().startswith("+") for v in value)):
            raise ValueError("every number must be a phone number with its country code, as +74950000000")
        return [n for n in numbers if n]

    def settings(self) -> dict[str, Any]:
        """The counter's own settings as stored and shown: unset ones (None, no site numbers) left out, so
        an account that uses no newer field is stored exactly as the release before wrote it."""
        return {k: v for k, v in self.model_dump().items() if v is not None and v != []}


class TelephonyIn(_Strict):
    """A telephony account whose secret signs its webhooks. Without ``secret`` the stored one is kept."""

    provider: Provider
    account: Annotated[str, Field(pattern=PROVIDER_ACCOUNT)]
    secret: SecretStr | None = None
    timezone: str | None = None

    _zone = field_validator("timezone")(classmethod(lambda cls, v: _zone(v)))


class AccountIn(_Strict):
    """One client: id, display name, tokens, counters, telephony accounts."""

    id: Annotated[str, Field(pattern=ACCOUNT_ID)]
    name: Annotated[str, Field(max_length=200)] = ""
    tokens: list[TokenIn] = Field(default_factory=list, max_length=20)
    counters: list[CounterIn] = Field(default_factory=list, max_length=100_000)
    telephony: list[TelephonyIn] = Field(default_factory=list, max_length=1000)
    #: Where final upload statuses and held calls are posted (issue 19); the secret signs each body.
    webhook_url: Annotated[str | None, Field(max_length=2000)] = None
    webhook_secret: SecretStr | None = None

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname or any(c.isspace() for c in value):
            raise ValueError("must be an http(s) URL with a host, as https://crm.example/calltrack")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        """A Standard Webhooks secret (``whsec_`` + base64 of 24 to 64 bytes) or, as before, a plain one of
        at least 16 characters (its UTF-8 bytes are the HMAC key; README "Webhooks")."""
        if value is None:
            return None
        plain = value.get_secret_value()
        if plain.startswith(WHSEC_PREFIX):
            try:
                key = base64.b64decode(plain.removeprefix(WHSEC_PREFIX), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("a whsec_ secret must be whsec_ and base64") from None
            if not 24 <= len(key) <= 64:
                raise ValueError("a whsec_ secret must hold 24 to 64 bytes")
        elif len(plain) < 16:
            raise ValueError("must be at least 16 characters (or whsec_ and base64 of 24 to 64 bytes)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AccountIn:
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("tokens: each token name may appear once")
        ids = [c.id for c in self.counters]
        if len(set(ids)) != len(ids):
            raise ValueError("counters: each counter id may appear once")
        for counter in self.counters:
            if counter.token is not None and counter.token not in names:
                raise ValueError(f"counters: counter {counter.id} names token {counter.token!r}, not in tokens")
        pairs = [(t.provider, t.account) for t in self.telephony]
        if len(set(pairs)) != len(pairs):
            raise ValueError("telephony: each (provider, account) may appear once")
        return self


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: object) -> M:
    """Validate ``data`` or raise ``AccountInputError`` naming the field and the rule (never the value)."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        rule = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
        raise AccountInputError(where, rule) from None


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    value: SecretStr
    refresh_token: SecretStr | None = None
    expires_at: float | None = None  # Unix seconds
    login: str | None = None  # learned from the user-info endpoint; None: unknown
    check: str | None = None  # the user-info check when added: "refused" (401/403), "unchecked" (no answer)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.value)

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "login": self.login,
            "fingerprint": self.fingerprint,
            "expires_at": iso(self.expires_at),
            "has_refresh_token": self.refresh_token is not None,
            "check": self.check or "ok",
        }


@dataclass(frozen=True, slots=True)
class Telephony:
    provider: str
    account: str
    secret: SecretStr | None
    timezone: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "account": self.account,
            "timezone": self.timezone,
            "has_secret": self.secret is not None,
        }


@dataclass(frozen=True, slots=True)
class Account:
    """An account as stored, secrets decrypted (as ``SecretStr``)."""

    id: str
    name: str = ""
    tokens: tuple[Token, ...] = ()
    counters: tuple[CounterIn, ...] = ()
    telephony: tuple[Telephony, ...] = ()
    updated_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    #: The secret before the last change: it signs too (a second signature) until ``webhook_previous_until``.
    webhook_previous: SecretStr | None = None
    webhook_previous_until: float = 0.0

    def webhook_secrets(self, now: float) -> tuple[SecretStr, ...]:
        """The secrets that sign a delivery now: the current one, and the previous one during a rotation."""
        if self.webhook_secret is None:
            return ()
        if self.webhook_previous is not None and now < self.webhook_previous_until:
            return (self.webhook_secret, self.webhook_previous)
        return (self.webhook_secret,)

    @property
    def login(self) -> str | None:
        return next((t.login for t in self.tokens if t.login), None)

    def token(self, name: str | None) -> Token | None:
        if name is None:
            return self.tokens[0] if self.tokens else None
        return next((t for t in self.tokens if t.name == name), None)

    def token_of(self, counter: CounterIn) -> Token | None:
        return self.token(counter.token)

    def canonical(self) -> dict[str, Any]:
        """Everything that matters for "did it change", secrets included (in memory only)."""
        return {
            "id": self.id,
            "name": self.name,
            "tokens": [
                (t.name, t.value.get_secret_value(), _plain(t.refresh_token), t.expires_at, t.login)
                for t in self.tokens
            ],
            "counters": [c.model_dump() for c in self.counters],
            "telephony": [(t.provider, t.account, _plain(t.secret), t.timezone) for t in self.telephony],
            "webhook": (
                self.webhook_url,
                _plain(self.webhook_secret),
                _plain(self.webhook_previous),
                self.webhook_previous_until,
            ),
        }

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "login": self.login,
            "tokens": [t.public() for t in self.tokens],
            "counters": [c.settings() for c in self.counters],
            "telephony": [t.public() for t in self.telephony],
            "webhook": self._webhook_public() if self.webhook_url else None,
            "updated_at": iso(self.updated_at),
        }

    def _webhook_public(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"url": self.webhook_url, "has_secret": self.webhook_secret is not None}
        if self.webhook_previous is not None and self.webhook_previous_until > time.time():
            shown["previous_secret_signs_until"] = iso(self.webhook_previous_until)
        return shown


def _plain(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
