"""Find a running ``./scripts/run`` demo: its ``var/standalone/demo.json`` names its Redis, namespace and
emulator. Used when the environment (and the current directory's .env) sets none of CALLTRACK_REDIS_URL,
REDIS_URL, CALLTRACK_NAMESPACE (or with ``./scripts/ctl --demo``). Import-light: json and os only."""

from __future__ import annotations

import json
import os
from pathlib import Path

DEMO_FILE = Path(__file__).resolve().parent.parent / "var" / "standalone" / "demo.json"
OWN_SETTINGS = ("CALLTRACK_REDIS_URL", "REDIS_URL", "CALLTRACK_NAMESPACE")


def _running(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dotenv_names_own(path: Path = Path(".env")) -> bool:
    """Whether the ``.env`` that the settings read (the current directory's) sets Redis or a namespace."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return False
    names = {line.split("=", 1)[0].strip().removeprefix("export ").strip() for line in lines if "=" in line}
    return bool(names & set(OWN_SETTINGS))


def demo_environment(path: Path | None = None) -> dict[str, str] | None:
    """The settings that point at the running demo, or None when no demo runs."""
    try:
        info = json.loads((path or DEMO_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not _running(info.get("pid")):
        return None
    env = {"CALLTRACK_REDIS_URL": str(info["redis_url"]), "CALLTRACK_NAMESPACE": str(info["namespace"])}
    if info.get("emulator_url"):
        env["CALLTRACK_METRICA_EMULATOR"] = "true"
        env["CALLTRACK_EMULATOR_URL"] = str(info["emulator_url"])
    secret_file = (info.get("files") or {}).get("oauth_client_secret")
    if info.get("oauth_client_id") and secret_file:  # the emulator's OAuth app: `accounts connect` works
        try:
            env["CALLTRACK_OAUTH_CLIENT_SECRET"] = Path(secret_file).read_text().strip()
            env["CALLTRACK_OAUTH_CLIENT_ID"] = str(info["oauth_client_id"])
        except OSError:
            pass
    return env


def use_demo(*, forced: bool) -> dict[str, str] | None:
    """Point this process's settings at the running demo when asked (``forced``) or when the environment
    names no Redis and no namespace of its own; answers what was set."""
    if not forced and (any(os.environ.get(name) for name in OWN_SETTINGS) or _dotenv_names_own()):
        return None
    env = demo_environment()
    if env is not None:
        os.environ.update(env)
    return env
