"""Emulator configuration: dataclasses with defaults, loadable from TOML (see docs/emulator.md)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emulator.clock import parse_iso
from emulator.faults import FaultRule, ScriptEntry, rule_from_dict, script_from_dict


@dataclass(frozen=True)
class Account:
    """An OAuth token of one login; ``counters`` None means every counter (``"*"`` in TOML)."""

    token: str
    login: str
    counters: frozenset[int] | None = None


@dataclass(frozen=True)
class OAuthApp:
    """An application registered with the Yandex ID stand-in. A ``redirect_uris`` entry ending in ``*``
    allows every URI starting with the part before it."""

    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...] = ("http://127.0.0.1*", "http://localhost*")


@dataclass(frozen=True)
class CounterInfo:
    """What ``GET /management/v1/counters`` tells about a counter (optional; defaults are made up)."""

    id: int
    name: str | None = None
    site: str | None = None


DEFAULT_OAUTH_APP = OAuthApp(client_id="emulator-client", client_secret="emulator-secret")  # noqa: S106 - demo app
YEAR = 365 * 86400.0


@dataclass(frozen=True)
class QuotaConfig:
    """Metrica's quotas; None (0/false in TOML) disables one. ``http_status`` is 429 or 420."""

    requests_per_ip_per_second: int | None = 30
    parallel_requests_per_login: int | None = 3
    requests_per_login_per_day: int | None = 5000
    http_status: int = 429


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything the emulator can be told at start; most of it can be changed at run time too."""

    accounts: tuple[Account, ...] = (Account(token="demo-token", login="demo"),)  # noqa: S106 - public demo token
    step_seconds: float = 5.0
    known_visitors: frozenset[str] | None = None
    trust_forwarded_for: bool = False
    quotas: QuotaConfig = field(default_factory=QuotaConfig)
    faults: tuple[FaultRule, ...] = ()
    script: tuple[ScriptEntry, ...] = ()
    seed: int | None = None
    clock_start: float | None = None
    clock_frozen: bool = False
    max_file_bytes: int = 1 << 30
    log_level: str = "warning"
    access_log: bool = False
    oauth_apps: tuple[OAuthApp, ...] = (DEFAULT_OAUTH_APP,)
    token_lifetime: float = YEAR  # seconds an OAuth-issued token (and its refresh token) lives
    code_lifetime: float = 600.0  # seconds an authorization code can be exchanged, once
    counters: tuple[CounterInfo, ...] = ()
    join_rules: bool = False  # judge joins row by row (windows, goals, static calls); see emulator.joins
    count_unjoined: bool = False  # with join_rules: keep rows that do not join in line_quantity
    strict: bool = False  # refuse what no reference page documents (type=CALLS, unconfirmed columns)

    def with_changes(self, **changes: Any) -> EmulatorConfig:
        """A copy with some fields replaced (``dataclasses.replace``)."""
        return replace(self, **changes)


def _limit(value: Any, name: str) -> int | None:
    if value is None or value is False or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"quota {name} must be a non-negative integer (0/false disables), got {value!r}")
    return value


def quotas_from_dict(data: Mapping[str, Any], base: QuotaConfig | None = None) -> QuotaConfig:
    """Overlay the keys present in ``data`` on ``base`` (defaults when None)."""
    current = base or QuotaConfig()
    allowed = set(QuotaConfig.__dataclass_fields__)
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"unknown quota keys: {sorted(unknown)}")
    changes: dict[str, Any] = {}
    for key in ("requests_per_ip_per_second", "parallel_requests_per_login", "requests_per_login_per_day"):
        if key in data:
            changes[key] = _limit(data[key], key)
    if "http_status" in data:
        status = int(data["http_status"])
        if status not in (420, 429):
            raise ValueError(f"quota http_status must be 429 or 420, got {status}")
        changes["http_status"] = status
    return replace(current, **changes)


def account_from_dict(data: Mapping[str, Any]) -> Account:
    unknown = set(data) - {"token", "login", "counters"}
    if unknown:
        raise ValueError(f"unknown account keys: {sorted(unknown)}")
    counters = data.get("counters", "*")
    parsed: frozenset[int] | None
    if counters == "*":
        parsed = None
    elif isinstance(counters, list):
        parsed = frozenset(int(c) for c in counters)
    else:
        raise ValueError(f"account counters must be '*' or a list of integers, got {counters!r}")
    return Account(token=str(data["token"]), login=str(data.get("login", data["token"])), counters=parsed)


def oauth_app_from_dict(data: Mapping[str, Any]) -> OAuthApp:
    unknown = set(data) - {"client_id", "client_secret", "redirect_uris"}
    if unknown:
        raise ValueError(f"unknown oauth app keys: {sorted(unknown)}")
    uris = data.get("redirect_uris", list(DEFAULT_OAUTH_APP.redirect_uris))
    if isinstance(uris, str):
        uris = [uris]
    return OAuthApp(str(data["client_id"]), str(data["client_secret"]), tuple(str(u) for u in uris))


def counter_info_from_dict(data: Mapping[str, Any]) -> CounterInfo:
    unknown = set(data) - {"id", "name", "site"}
    if unknown:
        raise ValueError(f"unknown counter keys: {sorted(unknown)}")
    name, site = data.get("name"), data.get("site")
    return CounterInfo(int(data["id"]), str(name) if name is not None else None, str(site) if site else None)


def _positive(value: Any, name: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(f"{name} must be positive")
    return number


_TOP_KEYS = {
    "oauth_apps",
    "token_lifetime",
    "code_lifetime",
    "counters",
    "join_rules",
    "count_unjoined",
    "strict",
    "accounts",
    "step_seconds",
    "known_visitors",
    "trust_forwarded_for",
    "quotas",
    "faults",
    "script",
    "seed",
    "clock",
    "max_file_bytes",
    "log_level",
    "access_log",
}


def config_from_dict(data: Mapping[str, Any]) -> EmulatorConfig:
    """Build a config from the TOML document's dict; absent keys keep their defaults."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ValueError(f"unknown emulator config keys: {sorted(unknown)}")
    config = EmulatorConfig()
    changes: dict[str, Any] = {}
    if "accounts" in data:
        changes["accounts"] = tuple(account_from_dict(a) for a in data["accounts"])
    if "step_seconds" in data:
        step = float(data["step_seconds"])
        if step <= 0:
            raise ValueError("step_seconds must be positive")
        changes["step_seconds"] = step
    if "known_visitors" in data:
        visitors = data["known_visitors"]
        changes["known_visitors"] = None if visitors == "*" else frozenset(str(v) for v in visitors)
    if "trust_forwarded_for" in data:
        changes["trust_forwarded_for"] = bool(data["trust_forwarded_for"])
    if "quotas" in data:
        changes["quotas"] = quotas_from_dict(data["quotas"])
    if "faults" in data:
        changes["faults"] = tuple(rule_from_dict(r) for r in data["faults"])
    if "script" in data:
        changes["script"] = tuple(script_from_dict(s) for s in data["script"])
    if "seed" in data:
        changes["seed"] = int(data["seed"])
    if "clock" in data:
        clock = data["clock"]
        unknown_clock = set(clock) - {"start", "frozen"}
        if unknown_clock:
            raise ValueError(f"unknown clock keys: {sorted(unknown_clock)}")
        if "start" in clock:
            start = clock["start"]
            if isinstance(start, datetime):
                start = start if start.tzinfo is not None else start.replace(tzinfo=UTC)
                changes["clock_start"] = start.timestamp()
            else:
                changes["clock_start"] = parse_iso(str(start))
        changes["clock_frozen"] = bool(clock.get("frozen", False))
    for key in ("max_file_bytes",):
        if key in data:
            changes[key] = int(data[key])
    if "log_level" in data:
        changes["log_level"] = str(data["log_level"]).lower()
    if "access_log" in data:
        changes["access_log"] = bool(data["access_log"])
    if "oauth_apps" in data:
        changes["oauth_apps"] = tuple(oauth_app_from_dict(a) for a in data["oauth_apps"])
    for key in ("token_lifetime", "code_lifetime"):
        if key in data:
            changes[key] = _positive(data[key], key)
    if "counters" in data:
        changes["counters"] = tuple(counter_info_from_dict(c) for c in data["counters"])
    for key in ("join_rules", "count_unjoined", "strict"):
        if key in data:
            changes[key] = bool(data[key])
    return replace(config, **changes)


def load_config(path: str | Path) -> EmulatorConfig:
    """Read a TOML file (see ``emulator/example.toml``)."""
    with Path(path).open("rb") as handle:
        return config_from_dict(tomllib.load(handle))
