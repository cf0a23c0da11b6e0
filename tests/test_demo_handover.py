"""``./scripts/run`` hands over the running system (issue 25, items 2 and 5): from a second process
whose environment holds only PATH and HOME (no CALLTRACK_* setting), ``./scripts/ctl`` finds the demo
through var/standalone/demo.json and sees its namespace and data, and the console opens with the
generated password. The demo says PROCESSED only once the pipeline's own records do, and its Zadarma
sample calls go through the number pool (none held)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from standalone.redis_server import free_port
from tests.demo_helpers import running_demo

ROOT = Path(__file__).resolve().parent.parent
DEMO_FILE = ROOT / "var" / "standalone" / "demo.json"


def clean_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "ctl"), *args],
        check=False,
        cwd="/",
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_second_terminal_reaches_the_running_demo() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACK_") and k not in ("REDIS_URL", "CI_REDIS")}
    env |= {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    with running_demo(env, 80) as demo:
        output = demo.wait_for(["every upload PROCESSED"], timeout=150)
        assert "ctl        ./scripts/ctl status" in output, output
        # Zadarma's sample calls are attributed through the number pool: none is held.
        assert "80 calls stored by the ingestion service" in output and " 0 held" in output, output
        assert "in the pipeline's own records too" in output, output

        info = json.loads(DEMO_FILE.read_text())
        assert info["namespace"] == "demo" and f"redis      {info['redis_url']} (started" in output
        assert "token" not in json.dumps({k: v for k, v in info.items() if k != "files"}).lower()
        for name in ("console_password", "admin_token", "status_token"):
            path = Path(info["files"][name])
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
            assert path.read_text().strip()

        # ctl from a clean environment: the demo's namespace and counters, its data.
        status = ctl("status", "--json")
        assert status.returncode == 0, status.stderr
        assert "Traceback" not in status.stderr
        counters = {c["counter_id"]: c for c in json.loads(status.stdout)}
        assert {101, 202, 303} <= set(counters), status.stdout
        assert all(c["last_upload"] and c["last_upload"]["status"] == "PROCESSED" for c in counters.values())
        held = ctl("held", "list", "--json")
        assert held.returncode == 0, held.stderr
        assert json.loads(held.stdout) == [], held.stdout  # no Zadarma call left held
        connect = ctl("accounts", "connect", "shop")
        assert connect.returncode == 0, connect.stderr
        assert connect.stdout.startswith(info["emulator_url"] + "/authorize?"), connect.stdout  # not Yandex's
        doctor = ctl("doctor")
        assert "Traceback" not in doctor.stderr, doctor.stderr
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "namespace demo" in doctor.stdout and "FAIL" not in doctor.stdout, doctor.stdout
        # The status API with the generated token.
        token = Path(info["files"]["status_token"]).read_text().strip()
        answer = httpx.get(
            f"{info['ingest_url']}/v1/counters/202", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert answer.status_code == 200, answer.text

        # The console: log in with the generated password, fetch a page that shows the demo's counters.
        password = Path(info["files"]["console_password"]).read_text().strip()
        with httpx.Client(base_url=info["ingest_url"], timeout=10) as client:
            page = client.get("/console/login").text
            csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            answer = client.post(
                "/console/login", data={"csrf": csrf, "user": info["console_user"], "password": password}
            )
            assert answer.status_code == 303, answer.text
            home = client.get("/console/")
            assert home.status_code == 200 and "202" in home.text, home.text
    assert demo.proc.returncode == 0
    assert not DEMO_FILE.exists()  # removed on exit
    gone = ctl("--demo", "status")
    assert gone.returncode == 2 and "no running demo" in gone.stderr


def test_ctl_uses_a_demo_file_only_when_its_process_runs_and_nothing_is_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ctl import demo

    path = tmp_path / "demo.json"
    info = {"redis_url": "redis://127.0.0.1:1/0", "namespace": "demo", "emulator_url": "http://127.0.0.1:2"}
    monkeypatch.setattr(demo, "DEMO_FILE", path)
    touched = (*demo.OWN_SETTINGS, "CALLTRACK_METRICA_EMULATOR", "CALLTRACK_EMULATOR_URL", "CALLTRACK_OAUTH_CLIENT_ID")
    for name in touched:  # set, then removed: monkeypatch restores each after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    assert demo.use_demo(forced=False) is None  # no file
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True)
    path.write_text(json.dumps({"pid": int(dead.stdout), **info}))
    assert demo.use_demo(forced=True) is None  # a stale file: its process is gone
    path.write_text(json.dumps({"pid": os.getpid(), **info}))
    monkeypatch.setenv("CALLTRACK_NAMESPACE", "mine")
    assert demo.use_demo(forced=False) is None  # exported settings win
    assert os.environ["CALLTRACK_NAMESPACE"] == "mine"
    monkeypatch.delenv("CALLTRACK_NAMESPACE")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CALLTRACK_REDIS_URL=redis://127.0.0.1:6379/0\n")
    assert demo.use_demo(forced=False) is None  # so does a .env that names a Redis
    found = demo.use_demo(forced=True)
    assert found is not None and os.environ["CALLTRACK_NAMESPACE"] == "demo"
    assert os.environ["CALLTRACK_METRICA_EMULATOR"] == "true"
    assert os.environ["CALLTRACK_EMULATOR_URL"] == "http://127.0.0.1:2"
