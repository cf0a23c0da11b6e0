"""A real worker (with beat) and Flower as subprocesses: headless Chromium logs into Flower with the
configured credentials and sees the worker, and is refused without them; the health probes say
alive/ready while the worker runs and not once it is killed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

from config.settings import Settings
from standalone.redis_server import free_port
from tests.helpers import chromium, wait_for

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "flower-test-password-0123"


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@pytest.fixture
def env(make_settings: Callable[..., Settings], tmp_path: Path) -> dict[str, str]:
    settings = make_settings()
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CALLTRACK_REDIS_URL": settings.redis_url,
        "CALLTRACK_NAMESPACE": settings.namespace,
        "CALLTRACK_SHARDS": "2",
        "CALLTRACK_HEARTBEAT_INTERVAL": "0.5",
        "CALLTRACK_HEARTBEAT_DIR": str(tmp_path / "alive"),
        "CALLTRACK_FLOWER_PASSWORD": PASSWORD,
        "CALLTRACK_FLOWER_PORT": str(free_port()),
        "CALLTRACK_LOG_FORMAT": "json",
    }


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    celery = str(Path(sys.executable).with_name("celery"))
    args = [celery, "-A", "worker.main", "worker", "--beat", "--concurrency", "1", "--hostname", "probe@%h"]
    args += ["--schedule", str(tmp_path / "beat-schedule"), "--loglevel", "INFO"]
    with (tmp_path / "worker.log").open("wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield proc
    stop(proc)


def probe(env: dict[str, str], *args: str) -> int:
    cmd = [sys.executable, "-m", "worker.ops.health", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=60, check=False).returncode


def test_health_probes_follow_the_worker(env: dict[str, str], worker: subprocess.Popen[bytes]) -> None:
    wait_for(lambda: probe(env, "readiness") == 0, timeout=60, interval=0.5, what="worker ready")
    assert probe(env, "liveness") == 0
    wait_for(lambda: probe(env, "readiness", "--role", "beat") == 0, timeout=30, interval=0.5, what="beat ready")
    assert probe(env, "readiness", "--host", "another-host") == 1
    stop(worker, signal.SIGKILL)  # no clean shutdown: the heartbeat just stops
    wait_for(lambda: probe(env, "liveness") == 1, timeout=30, interval=0.5, what="liveness fails")
    assert probe(env, "readiness") == 1
    broken = {**env, "CALLTRACK_REDIS_URL": "redis://127.0.0.1:1/0"}
    assert probe(broken, "readiness") == 1


def test_flower_refuses_to_start_without_credentials(env: dict[str, str]) -> None:
    bare = {k: v for k, v in env.items() if k != "CALLTRACK_FLOWER_PASSWORD"}
    out = subprocess.run(
        [sys.executable, "-m", "worker.ops.flower"],
        cwd=ROOT,
        env=bare,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "CALLTRACK_FLOWER_PASSWORD" in out.stderr


def test_browser_logs_into_flower_and_sees_the_worker(
    env: dict[str, str], worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    base = f"http://127.0.0.1:{env['CALLTRACK_FLOWER_PORT']}"
    with (tmp_path / "flower.log").open("wb") as log:
        flower = subprocess.Popen(
            [sys.executable, "-m", "worker.ops.flower"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: _status(f"{base}/healthcheck") == 200, timeout=60, interval=0.3, what="Flower listening")
        assert PASSWORD not in " ".join(_cmdline(flower.pid))  # never on the command line
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
            try:
                for credentials in (None, {"username": "admin", "password": "wrong-password"}):
                    refused = browser.new_context(http_credentials=credentials)  # type: ignore[arg-type]
                    assert _refused(refused.new_page(), f"{base}/workers"), credentials
                    refused.close()

                context = browser.new_context(http_credentials={"username": "admin", "password": PASSWORD})
                page = context.new_page()
                deadline = time.monotonic() + 60
                while True:
                    response = page.goto(f"{base}/workers")
                    assert response is not None and response.status == 200
                    if "probe@" in page.content():
                        break
                    assert time.monotonic() < deadline, "Flower never listed the worker"
                    page.wait_for_timeout(1000)
                assert "Online" in page.content() or "True" in page.content()
                response = page.goto(f"{base}/tasks")
                assert response is not None and response.status == 200
                assert PASSWORD not in page.content()
                context.close()
            finally:
                browser.close()
    finally:
        stop(flower)


def _refused(page: Page, url: str) -> bool:
    """A 401 answer, or Chromium giving up on the credentials after Flower's 401."""
    try:
        response = page.goto(url)
    except PlaywrightError as error:
        return "ERR_INVALID_AUTH_CREDENTIALS" in str(error)
    return response is not None and response.status == 401 and "probe@" not in page.content()


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
