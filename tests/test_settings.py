"""Settings: validated at start-up; a wrong value stops the process with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import REAL_METRICA_URL, Settings

ROOT = Path(__file__).resolve().parent.parent


def run_loader(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACK_") and k != "REDIS_URL"}
    clean.update(env)
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", "from config.settings import load_settings; load_settings(); print('ok')"],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "variable", "rule"),
    [
        ({"REDIS_URL": "http://localhost:6379"}, "CALLTRACK_REDIS_URL (or REDIS_URL)", "redis://"),
        ({"CALLTRACK_REDIS_URL": "redis://localhost:notaport/0"}, "CALLTRACK_REDIS_URL", "port"),
        ({"CALLTRACK_FLUSH_MAX_ROWS": "-5"}, "CALLTRACK_FLUSH_MAX_ROWS", "greater than 0"),
        ({"CALLTRACK_FLUSH_MAX_AGE": "0"}, "CALLTRACK_FLUSH_MAX_AGE", "greater than 0"),
        ({"CALLTRACK_SHARDS": "many"}, "CALLTRACK_SHARDS", "integer"),
        ({"CALLTRACK_NAMESPACE": "Bad Name"}, "CALLTRACK_NAMESPACE", "lowercase"),
        ({"CALLTRACK_METRICA_COUNTER_TOKENS": "123"}, "CALLTRACK_METRICA_COUNTER_TOKENS", "counter=token"),
    ],
)
def test_bad_value_stops_with_one_line_naming_the_variable(
    env: dict[str, str], variable: str, rule: str, tmp_path: Path
) -> None:
    result = run_loader(env, tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0] and rule in lines[0]
    assert "Traceback" not in result.stderr


def test_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CALLTRACK_FLUSH_MAX_ROWS=0\n")
    result = run_loader({}, tmp_path)
    assert result.returncode == 2 and "CALLTRACK_FLUSH_MAX_ROWS" in result.stderr


def test_token_in_a_bad_value_is_not_echoed(tmp_path: Path) -> None:
    result = run_loader({"CALLTRACK_METRICA_COUNTER_TOKENS": "12x=AQAAsupersecret"}, tmp_path)
    assert result.returncode == 2
    assert "supersecret" not in result.stderr


def test_the_emulator_only_where_asked_for_and_until_a_token_is_set() -> None:
    plain = Settings(_env_file=None)
    assert not plain.uses_emulator and plain.api_base_url == REAL_METRICA_URL
    assert plain.token_for(1) is None  # no credentials: batches wait, nothing is posted anywhere
    demo = Settings(_env_file=None, metrica_emulator=True)
    assert demo.uses_emulator
    assert demo.api_base_url == str(demo.emulator_url).rstrip("/")
    assert demo.token_for(1) is not None

    real = Settings(_env_file=None, metrica_counter_tokens="101=tok-a,102=tok-b")
    assert not real.uses_emulator
    assert real.api_base_url == REAL_METRICA_URL
    token = real.token_for(101)
    assert token is not None and token.get_secret_value() == "tok-a"
    assert real.token_for(999) is None  # no default token: that counter cannot upload
    assert "tok-a" not in repr(real) and "tok-a" not in str(real.model_dump())


def test_counter_tokens_accept_json() -> None:
    settings = Settings(_env_file=None, metrica_counter_tokens='{"5": "abc"}', metrica_token="default")
    assert settings.token_for(5).get_secret_value() == "abc"  # type: ignore[union-attr]
    assert settings.token_for(6).get_secret_value() == "default"  # type: ignore[union-attr]
