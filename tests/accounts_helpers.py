"""Shared by the account tests: settings wired to one emulator, the CLI and the admin API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from click.testing import CliRunner
from cryptography.fernet import Fernet

from config.settings import Settings
from ctl.__main__ import main
from ctl.context import Context
from emulator.server import RunningEmulator

SECRET_KEY = Fernet.generate_key().decode()
ADMIN_TOKEN = "admin-bearer-for-tests-0123456789"


def account_settings(make_settings: Callable[..., Settings], emulator: RunningEmulator, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "metrica_base_url": emulator.base_url,
        "emulator_url": emulator.base_url,
        "secret_keys": SECRET_KEY,
        "admin_api_token": ADMIN_TOKEN,
        "accounts_cache_seconds": 0.2,
        "oauth_client_id": "emulator-client",
        "oauth_client_secret": "emulator-secret",
    }
    values.update(extra)
    return make_settings(**values)


def ctl(settings: Settings, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), obj=Context(settings), input=stdin, catch_exceptions=False)
    return result.exit_code, result.output


def admin(base_url: str, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(
        method, f"{base_url}/admin/v1{path}", json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
    )
