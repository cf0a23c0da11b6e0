"""What ``./scripts/run`` hands over to a second terminal: generated secrets (files only the user may
read) and ``var/standalone/demo.json``, which ``./scripts/ctl`` reads to find the running demo.

demo.json holds no secret: it names the token and password files instead.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

DEMO_FILE = "demo.json"


def generated_secret(var: Path, env: dict[str, str], file_name: str, variable: str, nbytes: int = 12) -> Path:
    """A fresh random secret into ``env[variable]`` and ``var/file_name`` (mode 0600); its path."""
    var.mkdir(parents=True, exist_ok=True)
    path = var / file_name
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    value = secrets.token_urlsafe(nbytes)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    env[variable] = value
    return path


def write_demo_file(var: Path, info: dict[str, Any]) -> Path:
    """Write demo.json atomically (mode 0600: it names where the secrets are, and the pid)."""
    path = var / DEMO_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"pid": os.getpid(), **info}, handle, indent=2)
        handle.write("\n")
    tmp.replace(path)
    return path


def remove_demo_file(var: Path) -> None:
    path = var / DEMO_FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():  # another run's file is not ours
            path.unlink()
    except (OSError, ValueError):
        pass
