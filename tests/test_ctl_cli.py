"""``./scripts/ctl`` as an operator runs it (issue 25): a subprocess per call, like a terminal.

Each error is one line on stderr with its exit status (1 refused, 2 usage, 3 Redis unreachable),
never a traceback; logs stay off stderr unless ``-v``; ``--help`` imports no command; tables print
local ISO times while ``--json`` keeps the stored numbers. The ``--help`` figure is printed (and
recorded in docs/benchmarks.md), never asserted.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from config.settings import Settings
from ctl.__main__ import COMMANDS, main
from tests.edge_helpers import env_of, free_port
from tests.ingest_helpers import ingest_settings, recent, service

ROOT = Path(__file__).resolve().parent.parent
CTL = str(ROOT / "scripts" / "ctl")


def ctl(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CTL, *args], env=env, cwd=cwd or ROOT / "tests", capture_output=True, text=True, timeout=120, check=False
    )


def one_line_error(out: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The run failed with ``code`` and said so in exactly one line on stderr, naming every needle."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == code, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert lines[0].startswith("Error: ") and all(n in lines[0] for n in needles), lines[0]
    return lines[0]


@pytest.fixture
def env(make_settings: Callable[..., Settings]) -> dict[str, str]:
    return env_of(make_settings(), CALLTRACK_METRICA_EMULATOR="true")


def test_unreachable_redis_is_one_line_and_status_3(env: dict[str, str]) -> None:
    closed = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    for args in (("status",), ("routing", "list"), ("accounts", "list")):
        out = ctl({**env, "CALLTRACK_REDIS_URL": closed}, *args)
        line = one_line_error(out, 3, "redis: unreachable", "127.0.0.1")
        assert "hunter2" not in line and out.stdout == ""


def test_unknown_counter_number_account_and_call_are_errors(env: dict[str, str]) -> None:
    assert ctl(env, "routing", "add", "+74950000101", "404").returncode == 0
    one_line_error(ctl(env, "status", "99999"), 1, "counter: 99999 unknown")
    one_line_error(ctl(env, "status", "404", "99998"), 1, "99998")  # one unknown among known ones
    one_line_error(ctl(env, "uploads", "99999"), 1, "counter: 99999 unknown")
    one_line_error(ctl(env, "accounts", "show", "nobody"), 1, "account", "nobody")
    one_line_error(ctl(env, "accounts", "remove", "nobody"), 1, "account", "nobody")
    one_line_error(ctl(env, "where", "twilio", "CA-none"), 1, "call", "CA-none")
    # Removing an absent number removes nothing, not even the present one named with it.
    one_line_error(ctl(env, "routing", "remove", "+74950000101", "+74950000199"), 1, "number", "+74950000199")
    listed = orjson.loads(ctl(env, "routing", "list", "--json").stdout)
    assert [r["number"] for r in listed] == ["+74950000101"]
    # The known counter answers, exit 0, with nothing on stderr (no info logs without -v).
    known = ctl(env, "status", "404", "--json")
    assert known.returncode == 0 and known.stderr == "", known.stderr[-2000:]
    assert [item["counter_id"] for item in orjson.loads(known.stdout)] == [404]
    removed = ctl(env, "routing", "remove", "+74950000101")
    assert removed.returncode == 0 and removed.stdout.strip() == "removed 1"
    usage = ctl(env, "status", "nonsense")  # click's usage error: the usage line, then the error; status 2
    assert usage.returncode == 2 and usage.stderr.strip().splitlines()[-1].startswith("Error: Invalid value")


def test_logs_reach_stderr_only_with_v(env: dict[str, str]) -> None:
    """At the default level a warning still shows; an info line only with -v."""
    script = (
        "import structlog, click\n"
        "from ctl.__main__ import main\n"
        "@main.command('probe-logs')\n"
        "@click.pass_obj\n"
        "def probe(ctx):\n"
        "    ctx.settings\n"
        "    structlog.get_logger('probe').info('an_info_line')\n"
        "    structlog.get_logger('probe').warning('a_warning_line')\n"
        "main(prog_name='ctl')\n"
    )
    quiet = subprocess.run(
        [sys.executable, "-c", script, "probe-logs"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "a_warning_line" in quiet.stderr and "an_info_line" not in quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", script, "-v", "probe-logs"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "a_warning_line" in loud.stderr and "an_info_line" in loud.stderr


def test_help_names_scripts_ctl_and_imports_no_command() -> None:
    out = ctl(dict(os.environ), "--help")
    assert out.returncode == 0 and out.stdout.startswith("Usage: ./scripts/ctl "), out.stdout[:200]
    assert "-v, --verbose" in out.stdout and "python -m" not in out.stdout
    assert all(name in out.stdout for name in COMMANDS)
    probe = (
        "import sys\n"
        "from ctl.__main__ import main\n"
        "try:\n"
        "    main(['--help'], prog_name='ctl')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('redis', 'pydantic', 'celery', 'httpx', 'config.settings', 'worker', 'ctl.status', 'structlog')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()[-1]
    assert loaded == "[]", loaded


def test_stored_short_helps_are_the_commands_own() -> None:
    for name, (_module, _attr, short) in COMMANDS.items():
        command = main.get_command(None, name)  # type: ignore[arg-type]
        assert command is not None and command.name == name
        assert (command.help or "").split("\n")[0] == short, name


def test_lock_hash_recorded_so_calls_skip_the_sync() -> None:
    # PYTHONDONTWRITEBYTECODE (set in many images and CI shells) would make every call compile the
    # modules again: scripts/ctl keeps their bytecode in .venv/.pycache instead, never in the sources.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPYCACHEPREFIX", None)
    cached = ROOT / ".venv" / ".pycache" / str(ROOT).lstrip("/") / "ctl"
    for stale in cached.glob("context.*.pyc"):
        stale.unlink()  # a cache: written again by the call below
    assert ctl(env, "--help").returncode == 0
    recorded = (ROOT / ".venv" / ".ctl-lock-sha256").read_text().strip()
    assert recorded == hashlib.sha256((ROOT / "uv.lock").read_bytes()).hexdigest()
    assert any(cached.glob("context.*.pyc")), cached


def test_tables_print_local_iso_times_json_keeps_numbers(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings)
    started = recent()
    with service(settings) as (client, _rt):
        call = {"call_id": "tz-1", "to": "+74953330009", "from": "+79160000001", "start": started, "ClientId": "5"}
        assert client.post("/v1/calls", json=call).json()["reason"] == "unknown_number"
    env = {**env_of(settings, CALLTRACK_METRICA_EMULATOR="true"), "TZ": "Asia/Yekaterinburg"}  # +05:00, no DST
    table = ctl(env, "held", "list")
    assert table.returncode == 0, table.stderr[-2000:]
    expected = time.strftime("%Y-%m-%dT%H:%M:%S+05:00", time.gmtime(started + 5 * 3600))
    assert expected in table.stdout and str(started) not in table.stdout, table.stdout
    as_json = orjson.loads(ctl(env, "held", "list", "--json").stdout)
    assert as_json[0]["call"]["started_at"] == started and isinstance(as_json[0]["held_at_ms"], int)


def test_help_timing_is_measured_not_asserted() -> None:
    """The figure for docs/benchmarks.md: wall time of ``./scripts/ctl --help`` (printed, never asserted)."""
    env = dict(os.environ)
    assert ctl(env, "--help").returncode == 0  # warm: the lock hash is recorded, files are cached
    runs = []
    for _ in range(5):
        begun = time.perf_counter()
        assert ctl(env, "--help").returncode == 0
        runs.append(time.perf_counter() - begun)
    print(f"./scripts/ctl --help: median {statistics.median(runs) * 1000:.0f} ms over {len(runs)} runs")
