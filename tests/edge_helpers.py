"""The ingestion service as a real process (``python -m ingest``, uvicorn) for the attack tests, and probes.

Attacks only ever target 127.0.0.1; loops are bounded in count and time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from config.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class IngestProcess:
    base_url: str
    port: int
    process: subprocess.Popen[bytes]
    #: the service's stderr lines, read as they come (one JSON access line per request would
    #: otherwise fill the pipe and stall the service in a test that sends many requests)
    logs: list[bytes] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid


def console_csrf(page: str) -> str:
    """The CSRF token of a console page's form."""
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def console_login(client: httpx.Client, password: str) -> str:
    """Logs in to the console as ``admin``; answers the logged-in session's CSRF token."""
    token = console_csrf(client.get("/console/login").text)
    answer = client.post("/console/login", data={"csrf": token, "user": "admin", "password": password})
    assert answer.status_code == 303, answer.text
    return console_csrf(client.get("/console/quarantine").text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_of(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a child process these test settings (Redis, namespace, shards)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACK_")}
    env.update(
        {
            "CALLTRACK_REDIS_URL": settings.redis_url,
            "CALLTRACK_NAMESPACE": settings.namespace,
            "CALLTRACK_SHARDS": str(settings.shards),
            "CALLTRACK_LOG_FORMAT": "json",
            "CALLTRACK_ROUTING_CACHE_SECONDS": "0",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


@contextmanager
def ingest_process(env: Mapping[str, str], *, host: str = "127.0.0.1") -> Iterator[IngestProcess]:
    """``python -m ingest`` on a free loopback port; waits for /healthz, stops it afterwards."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ingest", "--host", host, "--port", str(port)],
        cwd=ROOT,
        env=dict(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    logs: list[bytes] = []
    reader = threading.Thread(target=lambda: logs.extend(process.stderr or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                reader.join(5)
                raise RuntimeError(f"ingest exited: {b''.join(logs).decode(errors='replace')}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the ingestion service did not start")
            time.sleep(0.1)
        yield IngestProcess(base, port, process, logs)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        reader.join(5)


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def stream_raw(port: int, head: bytes, chunks: Iterator[bytes], *, timeout: float = 60.0) -> tuple[bytes, int]:
    """Send ``head`` then each chunk (HTTP/1.1 chunked framing) until the server answers or closes.

    Returns the bytes the server answered and how many body bytes were sent before it did.
    """
    sent = 0
    answer = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        try:
            for chunk in chunks:
                if time.monotonic() > deadline:
                    break
                frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
                view = memoryview(frame)
                while view:
                    with suppress(BlockingIOError):
                        answer += sock.recv(65536)
                    if answer:
                        return answer, sent
                    try:
                        n = sock.send(view)
                        view = view[n:]
                    except BlockingIOError:
                        time.sleep(0.001)
                sent += len(chunk)
            sock.setblocking(True)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.setblocking(True)
        sock.settimeout(5)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except (OSError, TimeoutError):
            pass
    return answer, sent
