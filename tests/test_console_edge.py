"""The console under attack as a real process (uvicorn over real HTTP, real Redis; 127.0.0.1 only):
a cookie copied before logout, the admin token tried as the password, a login body of 40 MB."""

from __future__ import annotations

import ast
import socket
import time
from collections.abc import Callable, Iterator

import httpx

from config.settings import Settings
from tests.edge_helpers import ROOT, console_login, env_of, ingest_process, reset_peak, status_kb, stream_raw
from worker.runtime import Runtime

PASSWORD = "console-password-0123456789"
ADMIN = "admin-token-0123456789abcdef"
MB = 1024 * 1024


def _login(client: httpx.Client) -> str:
    """Logs in; answers the logged-in page's CSRF token."""
    return console_login(client, PASSWORD)


def test_a_console_cookie_stops_working_at_logout(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    rt = Runtime(settings)
    env = env_of(settings, CALLTRACK_CONSOLE_PASSWORD=PASSWORD)
    try:
        with ingest_process(env) as svc, httpx.Client(base_url=svc.base_url) as client:
            csrf = _login(client)
            copied = client.cookies["calltrack_console"]
            sessions = list(rt.redis.scan_iter(match=f"{settings.namespace}:console:session:*"))
            assert len(sessions) == 1
            assert 0 < int(rt.redis.ttl(sessions[0])) <= settings.console_session_seconds
            with httpx.Client(base_url=svc.base_url, cookies={"calltrack_console": copied}) as thief:
                assert thief.get("/console/counters").status_code == 200  # the copy works while logged in

                assert client.post("/console/logout", data={"csrf": csrf}).status_code == 303
                assert list(rt.redis.scan_iter(match=f"{settings.namespace}:console:session:*")) == []
                # The copied cookie (still validly signed) no longer opens a page nor posts a form.
                again = thief.get("/console/counters")
                assert again.status_code == 303 and again.headers["location"].startswith("/console/login")
                posted = thief.post("/console/quarantine/CT1S0B1Rx/discard", data={"csrf": csrf, "reason": "x"})
                assert posted.status_code == 401
            # Logging in again makes a new session.
            _login(client)
            assert client.get("/console/counters").status_code == 200
    finally:
        rt.close()


def test_the_admin_token_is_not_the_console_password(make_settings: Callable[..., Settings]) -> None:
    env = env_of(make_settings(), CALLTRACK_ADMIN_API_TOKEN=ADMIN)
    with ingest_process(env) as svc, httpx.Client(base_url=svc.base_url) as client:
        assert client.get("/console/login").status_code == 404
        answer = client.post("/console/login", data={"csrf": "x", "user": "admin", "password": ADMIN})
        assert answer.status_code == 404
        assert client.get("/admin/v1/accounts", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200


def _zeros(total: int, chunk: int = 65536) -> Iterator[bytes]:
    for _ in range(total // chunk):
        yield b"a" * chunk


def test_the_login_body_is_read_within_a_bound(make_settings: Callable[..., Settings]) -> None:
    """40 MB posted to /console/login took 30 s of CPU and ended in a 500; now 413 after a few KiB."""
    env = env_of(make_settings(), CALLTRACK_CONSOLE_PASSWORD=PASSWORD)
    total = 40 * MB
    with ingest_process(env) as svc:
        httpx.get(f"{svc.base_url}/healthz")
        time.sleep(0.3)
        reset_peak(svc.pid)
        base_kb = status_kb(svc.pid, "VmRSS")
        head = (
            "POST /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        answer, sent = stream_raw(svc.port, head.encode(), _zeros(total), timeout=60)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < total
        assert status_kb(svc.pid, "VmHWM") - base_kb < 16 * 1024
        # Declared too large: refused before the body is read.
        with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as sock:
            sock.sendall(
                f"POST /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {total}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
            )
            assert sock.recv(4096).startswith(b"HTTP/1.1 413")
        # A form of ordinary size is still answered (here: no CSRF cookie, so the form "expired").
        assert httpx.post(f"{svc.base_url}/console/login", data={"user": "admin"}).status_code == 403


def test_every_route_reads_its_body_through_the_bounded_readers() -> None:
    """No handler of the service reads a body but through ingest/edge.py (read_body, ndjson_lines):
    Starlette's request.body(), .json(), .form() and .stream() read without a limit."""
    unbounded = {"body", "json", "form", "stream"}
    found = []
    for path in sorted((ROOT / "ingest").rglob("*.py")):
        if path.name == "edge.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in unbounded
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "request"
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} request.{node.func.attr}()")
    assert found == [], found
