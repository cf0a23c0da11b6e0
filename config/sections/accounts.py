"""Accounts: the registry's key ring, its cache, the admin API, OAuth onboarding and token upkeep."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, HttpUrl, SecretStr, field_validator
from pydantic_settings import NoDecode

from config.sections.common import PositiveFloat, parse_list

FERNET_KEY_LENGTH = 44  # urlsafe base64 of 32 bytes


class AccountSettings(BaseModel):
    """The account registry (worker/accounts/): clients, their Yandex logins, tokens, counters, providers."""

    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Key ring that encrypts the registry's secrets at rest: Fernet keys separated by commas, the "
        "first encrypts, all decrypt (rotate: put a new key first, run 'ctl accounts rekey', then drop the old). "
        "Make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'.",
    )
    accounts_cache_seconds: Annotated[float, Field(ge=0, le=60)] = Field(
        default=1.0,
        description="How long a process trusts its copy of the registry before it checks the version key "
        "(0: every lookup). Changes reach every worker within this time, without a restart.",
    )
    admin_api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the admin HTTP API (/admin/v1/...); without it the admin API answers 404.",
    )
    oauth_client_id: str | None = Field(default=None, max_length=128, description="Yandex OAuth application id.")
    oauth_client_secret: SecretStr | None = Field(default=None, description="Yandex OAuth application secret.")
    oauth_base_url: HttpUrl | None = Field(
        default=None,
        description="Yandex ID root (/authorize, /token). Default: https://oauth.yandex.ru, or the emulator "
        "when uploads go to it.",
    )
    oauth_info_url: HttpUrl | None = Field(
        default=None,
        description="User-info endpoint that names a token's login. Default: https://login.yandex.ru/info, or "
        "the emulator's /info when uploads go to it.",
    )
    oauth_redirect_url: HttpUrl | None = Field(
        default=None,
        description="The callback URL registered with the OAuth application (…/oauth/callback of the ingestion "
        "service). Default: the ingestion service's own URL.",
    )
    oauth_state_seconds: Annotated[int, Field(ge=60, le=86_400)] = Field(
        default=1800, description="How long an onboarding link (its OAuth state) stays valid."
    )
    token_refresh_days: Annotated[float, Field(ge=0)] = Field(
        default=30.0, description="Tokens with a refresh token are refreshed this many days before they expire."
    )
    token_warning_days: Annotated[float, Field(ge=0)] = Field(
        default=14.0, description="A token expiring within this many days is reported as near expiry."
    )
    token_check_interval: PositiveFloat = Field(
        default=300.0, description="Seconds between runs of the periodic token upkeep (refresh, expiry checks)."
    )

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        return parse_list(value)

    @field_validator("secret_keys")
    @classmethod
    def _check_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            if len(key.get_secret_value()) != FERNET_KEY_LENGTH:
                # Never echo the key.
                raise ValueError("each key must be a Fernet key: 44 characters of urlsafe base64 (32 bytes)")
        return value


def account_secret_values(settings: AccountSettings) -> list[str]:
    values = [key.get_secret_value() for key in settings.secret_keys]
    for single in (settings.admin_api_token, settings.oauth_client_secret):
        if single is not None:
            values.append(single.get_secret_value())
    return values
