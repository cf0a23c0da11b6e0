"""The application runs from its checkout: its top-level packages must never come from site-packages."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["config", "tasks", "worker", "emulator", "ingest", "ctl", "bench"])
def test_package_resolves_inside_the_repository(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(ROOT), f"{name} imported from {module.__file__}"


def test_no_project_package_is_installed_in_the_environment() -> None:
    # Run from another directory: nothing of ours may be importable without the checkout on the path.
    code = (
        "import importlib.util, sys\n"
        "names = ('config', 'tasks', 'worker', 'emulator', 'ingest', 'ctl', 'bench')\n"
        "found = [n for n in names if importlib.util.find_spec(n)]\n"
        "print(','.join(found))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_worker_never_imports_the_emulator() -> None:
    for path in [*ROOT.joinpath("worker").rglob("*.py"), *ROOT.joinpath("tasks").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        assert "import emulator" not in text and "from emulator" not in text, path
