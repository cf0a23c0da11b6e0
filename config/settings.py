"""All configuration, read once from the environment (prefix ``CALLTRACK_``) and ``.env``.

A wrong value stops the process with one line naming the variable: see :func:`load_settings`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.sections.accounts import AccountSettings, account_secret_values
from config.sections.common import ENV_PREFIX
from config.sections.delivery import DeliverySettings
from config.sections.intake import IntakeSettings, ingest_secret_values
from config.sections.ops import OpsSettings
from config.sections.store import StoreSettings

REAL_METRICA_URL = "https://api-metrika.yandex.net"
# The token the bundled emulator accepts out of the box (emulator/example.toml); not a secret.
EMULATOR_DEMO_TOKEN = "demo-token"  # noqa: S105


class Settings(StoreSettings, DeliverySettings, IntakeSettings, AccountSettings, OpsSettings, BaseSettings):
    """Every knob of the worker, the producers and the tasks, one section per concern. Secrets are ``SecretStr``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # --- Derived -----------------------------------------------------------------------------
    @property
    def uses_emulator(self) -> bool:
        """True when the emulator was asked for (``metrica_emulator``) and no real token is configured."""
        return self.metrica_emulator and self.metrica_token is None and not self.metrica_counter_tokens

    @property
    def oauth_root(self) -> str:
        """Yandex ID's root (authorize, token): the emulator's own when uploads go to it."""
        if self.oauth_base_url is not None:
            return str(self.oauth_base_url).rstrip("/")
        return str(self.emulator_url).rstrip("/") if self.uses_emulator else "https://oauth.yandex.ru"

    @property
    def user_info_url(self) -> str:
        if self.oauth_info_url is not None:
            return str(self.oauth_info_url)
        return f"{self.oauth_root}/info" if self.uses_emulator else "https://login.yandex.ru/info"

    @property
    def api_base_url(self) -> str:
        if self.metrica_base_url is not None:
            return str(self.metrica_base_url).rstrip("/")
        return str(self.emulator_url).rstrip("/") if self.uses_emulator else REAL_METRICA_URL

    def token_for(self, counter_id: int) -> SecretStr | None:
        """The OAuth token that may upload to ``counter_id`` (its own, else the default)."""
        token = self.metrica_counter_tokens.get(counter_id, self.metrica_token)
        if token is None and self.uses_emulator:
            return SecretStr(EMULATOR_DEMO_TOKEN)
        return token

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log scrubber."""
        secrets = [t.get_secret_value() for t in self.metrica_counter_tokens.values()]
        if self.metrica_token is not None:
            secrets.append(self.metrica_token.get_secret_value())
        secrets += ingest_secret_values(self)
        secrets += account_secret_values(self)
        for single in (self.flower_password, self.status_api_token, self.console_password):
            if single is not None:
                secrets.append(single.get_secret_value())
        if self.ingest_api_token is not None:
            secrets.append(self.ingest_api_token.get_secret_value())
        return [s for s in secrets if len(s) >= 4]


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"


def describe_error(error: ValidationError) -> str:
    """One line naming each offending variable and the rule it broke; never the value."""
    parts = []
    for item in error.errors():
        loc = item.get("loc") or ()
        field = str(loc[0]) if loc else ""
        name = field if field.startswith(ENV_PREFIX) else env_name(field)
        if name == env_name("redis_url"):
            name = f"{name} (or REDIS_URL)"
        message = str(item.get("msg", "is invalid")).removeprefix("Value error, ")
        if not field:
            parts.append(message)
        else:
            parts.append(f"{name}: {message}")
    return "invalid configuration: " + "; ".join(parts)


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Read and validate the settings, or exit with status 2 and one clear line on stderr."""
    try:
        return Settings(_env_file=env_file)
    except ValidationError as error:
        print(describe_error(error), file=sys.stderr)
        raise SystemExit(2) from None
