"""Attacks on the ingestion service as a real process (uvicorn over real HTTP, real Redis): exposure,
bodies too large for memory, slow clients. Every attack targets 127.0.0.1 only."""

from __future__ import annotations

import ipaddress
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from urllib.parse import urlencode

import httpx
import orjson
import pytest

from config.settings import Settings
from ingest.edge import ExposureError, check_exposure
from ingest.protocol import MAX_HEAD_BYTES, EdgeLimits
from ingest.signatures import twilio_signature
from tests.edge_helpers import ROOT, env_of, free_port, ingest_process, reset_peak, status_kb, stream_raw
from tests.helpers import wait_for
from tests.ingest_helpers import STATIC, TWILIO_SID, TWILIO_TOKEN, add_routes, recent, snapshot, stored_rows
from worker.runtime import Runtime

MB = 1024 * 1024
SLOW = "127.0.0.2"  # another client than the tests' 127.0.0.1 (all of 127.0.0.0/8 is this machine)
RSS_BUDGET_KB = 32 * 1024


def test_refuses_to_start_beyond_loopback_without_a_token(make_settings: Callable[..., Settings]) -> None:
    env = env_of(make_settings())
    env.pop("CALLTRACK_INGEST_API_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "ingest", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        code = process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
        pytest.fail("the service started on 0.0.0.0 without CALLTRACK_INGEST_API_TOKEN")
    assert code == 2
    assert process.stderr is not None and b"CALLTRACK_INGEST_API_TOKEN" in process.stderr.read()


def test_anonymous_access_beyond_loopback_needs_the_explicit_setting(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ExposureError, match="CALLTRACK_INGEST_ALLOW_ANONYMOUS"):
        check_exposure(make_settings(), "0.0.0.0")
    check_exposure(make_settings(ingest_allow_anonymous=True), "0.0.0.0")
    check_exposure(make_settings(ingest_api_token="t0k3n-0123456789"), "192.0.2.1")
    check_exposure(make_settings(), "127.0.0.1")
    check_exposure(make_settings(), "::1")


def test_anonymous_calls_from_beyond_loopback_are_refused(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    rt = Runtime(settings)
    add_routes(rt)
    call = {"call_id": "anon-1", "to": STATIC, "start": recent(), "ClientId": "1", "Price": "99999"}
    try:
        env = env_of(settings, CALLTRACK_INGEST_TRUSTED_PROXIES="127.0.0.1")
        with ingest_process(env) as svc, httpx.Client(base_url=svc.base_url) as http:
            before = snapshot(rt)
            remote = {"X-Forwarded-For": "203.0.113.9"}
            assert http.post("/v1/calls", json=call, headers=remote).status_code == 401
            assert http.post("/v1/calls/bulk", content=orjson.dumps(call), headers=remote).status_code == 401
            conversion = {"counter_id": 101, "conversion_id": "c1", "ClientId": "1", "Target": "x",
                          "DateTime": recent()}  # fmt: skip
            assert http.post("/v1/conversions", json=conversion, headers=remote).status_code == 401
            assert snapshot(rt) == before
            # The same call from this machine (no proxy hop) is taken.
            assert http.post("/v1/calls", json=call).json()["status"] == "accepted"
            assert len(stored_rows(rt)) == 1
    finally:
        rt.close()


def _repeat(chunk: bytes, total: int) -> Iterator[bytes]:
    for _ in range(total // len(chunk)):
        yield chunk


def _refused(answer: bytes, sent: int, total: int) -> bool:
    return answer.startswith(b"HTTP/1.1 413") or (not answer and sent < total)


@pytest.mark.parametrize(
    ("path", "total", "chunk", "declared"),
    [
        ("/v1/number", 300 * MB, b"a" * 65536, False),
        ("/v1/calls/bulk", 32 * MB + 65536, b"{}\n" * 21845 + b"\n", False),
        ("/v1/calls/bulk", 32 * MB + 65536, b"{}\n" * 21845 + b"\n", True),
        ("/v1/conversions/bulk", 32 * MB + 65536, b'{"a":' + b"1" * 65530 + b"}", False),
    ],
    ids=["number-300MB-chunked", "bulk-32MiB-short-lines", "bulk-32MiB-declared", "bulk-32MiB-one-long-line"],
)
def test_large_bodies_are_refused_while_read(
    make_settings: Callable[..., Settings], path: str, total: int, chunk: bytes, declared: bool
) -> None:
    settings = make_settings()
    with ingest_process(env_of(settings)) as svc:
        httpx.get(f"{svc.base_url}/healthz")
        time.sleep(0.3)
        reset_peak(svc.pid)
        base_kb = status_kb(svc.pid, "VmRSS")
        framing = f"Content-Length: {total}" if declared else "Transfer-Encoding: chunked"
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
        if declared:
            with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as sock:
                sock.sendall(head.encode() + chunk)
                answer, sent = sock.recv(4096), len(chunk)
        else:
            answer, sent = stream_raw(svc.port, head.encode(), _repeat(chunk, total), timeout=90)
        grown_kb = status_kb(svc.pid, "VmHWM") - base_kb
        assert _refused(answer, sent, total), (answer[:200], sent)
        assert sent < total
        assert grown_kb < RSS_BUDGET_KB, f"RSS grew by {grown_kb} kB"
        assert httpx.get(f"{svc.base_url}/healthz").status_code == 200


def test_slow_clients_and_endless_heads_do_not_stop_a_signed_webhook(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(twilio_auth_tokens={TWILIO_SID: TWILIO_TOKEN})
    rt = Runtime(settings)
    add_routes(rt)
    env = env_of(
        settings,
        CALLTRACK_TWILIO_AUTH_TOKENS=f"{TWILIO_SID}={TWILIO_TOKEN}",
        CALLTRACK_INGEST_HEADER_TIMEOUT="2",
        CALLTRACK_INGEST_BODY_TIMEOUT="2",
        CALLTRACK_INGEST_KEEPALIVE_TIMEOUT="1",
        CALLTRACK_IDENTIFIER_FIELDS='{"twilio": {"ClientId": "SipHeader_X-Client-Id"}}',
    )
    slow: list[socket.socket] = []
    try:
        with ingest_process(env) as svc:
            for n in range(200):  # half never finish their headers, half never finish their body
                # From another address: this machine's own caps (issue 22) would refuse the webhook below.
                sock = socket.create_connection(("127.0.0.1", svc.port), timeout=5, source_address=(SLOW, 0))
                if n % 2:
                    sock.sendall(b"POST /twilio/voice HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                else:
                    sock.sendall(b"POST /v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{")
                slow.append(sock)
            form = {"AccountSid": TWILIO_SID, "CallSid": "CA" + "5" * 32, "CallStatus": "completed",
                    "CallDuration": "30", "Direction": "inbound", "To": STATIC, "From": "+79161234567",
                    "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(recent())),
                    "SipHeader_X-Client-Id": "1556018960123456789"}  # fmt: skip
            url = f"{svc.base_url}/twilio/voice"
            headers = {"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, url, form.items()),
                       "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
            # Served, not starved: the client's own timeout is the bound (no duration is asserted).
            answer = httpx.post(url, content=urlencode(form), headers=headers, timeout=5)
            assert answer.status_code == 200
            assert len(stored_rows(rt)) == 1
            # The server sheds them: headers or body not complete within 2 s -> closed (408 for a body).
            time.sleep(3.5)
            readable, _, _ = select.select(slow, [], [], 2)  # a closed or answered socket is readable
            closed = 0
            for sock in readable:
                try:
                    data = sock.recv(65536)
                    closed += data == b"" or data.startswith((b"HTTP/1.1 408", b"HTTP/1.1 503"))  # 503: over a cap
                except ConnectionResetError:
                    closed += 1
            assert closed == len(slow), f"{len(slow) - closed} slow connections still open"

            # An endless head is refused as it arrives.
            big = socket.create_connection(("127.0.0.1", svc.port), timeout=5)
            slow.append(big)
            big.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * (20 * 1024))
            assert big.recv(65536).startswith(b"HTTP/1.1 400"), "an endless head was not refused"
    finally:
        for sock in slow:
            sock.close()
        rt.close()


def _head(size: int, path: str = "/healthz") -> bytes:
    """A complete GET head of exactly ``size`` bytes (request line, headers, blank line)."""
    start = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ".encode()
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


def _silent(sock: socket.socket) -> bool:
    """The server neither answered nor closed this connection (yet); poll-free, so any fd number works."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(timeout)
    return False


def _answer(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


@pytest.mark.parametrize("chunked", [False, True], ids=["one-write", "byte-by-byte-tail"])
def test_the_head_bound_is_exact(make_settings: Callable[..., Settings], chunked: bool) -> None:
    """A head of exactly MAX_HEAD_BYTES is served; one byte more is refused (400) and never parsed."""
    with ingest_process(env_of(make_settings())) as svc:
        for size, status in ((MAX_HEAD_BYTES, b"HTTP/1.1 200"), (MAX_HEAD_BYTES + 1, b"HTTP/1.1 400")):
            head = _head(size)
            assert len(head) == size
            with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as sock:
                if chunked:  # the last bytes one at a time: the bound holds across reads
                    sock.sendall(head[:-8])
                    for byte in head[-8:]:
                        time.sleep(0.01)
                        sock.sendall(bytes([byte]))
                else:
                    sock.sendall(head)
                answer = _answer(sock)
                assert answer.startswith(status), (size, answer[:100])


def test_one_address_flooding_heads_and_connections_does_not_refuse_another(
    make_settings: Callable[..., Settings],
) -> None:
    """1,005 unfinished heads from one address used to fill limit_concurrency: every client got 503
    until the header deadline. Now an address past its caps is refused alone; a trusted proxy's peer
    address is exempt (it carries many clients)."""
    env = env_of(
        make_settings(),
        CALLTRACK_INGEST_HEADER_TIMEOUT="60",
        CALLTRACK_INGEST_BODY_TIMEOUT="60",
        CALLTRACK_INGEST_MAX_CONNECTIONS_PER_CLIENT="50",
        CALLTRACK_INGEST_MAX_UNFINISHED_HEADS_PER_CLIENT="20",
        CALLTRACK_INGEST_TRUSTED_PROXIES="127.0.0.4",
    )
    held: list[socket.socket] = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:  # this test holds about 1,200 sockets at once
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))

    def connect(source: str, first: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", svc.port), timeout=5, source_address=(source, 0))
        held.append(sock)
        with suppress(OSError):
            sock.sendall(first)
        return sock

    def silent(socks: list[socket.socket], count: int) -> bool:
        return sum(_silent(sock) for sock in socks) == count

    try:
        with ingest_process(env) as svc:
            partial_head = b"POST /v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
            heads = [connect("127.0.0.2", partial_head) for _ in range(1005)]
            # This machine's other address is served at once: neither 503 nor a wait for the deadline.
            with httpx.Client(base_url=svc.base_url, timeout=5) as http:
                for _ in range(5):
                    assert http.get("/healthz").status_code == 200
            # The flooding address kept its cap of unfinished heads; the rest were answered 503 and closed.
            wait_for(lambda: silent(heads, 20), timeout=30, what="20 unfinished heads kept, 985 refused")
            late = connect("127.0.0.2", partial_head)
            late.setblocking(True)
            assert _answer(late).startswith(b"HTTP/1.1 503")

            # Open connections: complete heads with a body that never ends, past the per-address cap.
            body_head = b"POST /v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{"
            bodies = [connect("127.0.0.3", body_head) for _ in range(80)]
            assert httpx.get(f"{svc.base_url}/healthz", timeout=5).status_code == 200
            wait_for(lambda: silent(bodies, 50), timeout=30, what="50 connections kept, 30 refused")

            # A trusted proxy's address has no per-peer cap (CALLTRACK_INGEST_PROXY_MAX_CONNECTIONS=0).
            proxied = [connect("127.0.0.4", partial_head) for _ in range(60)]
            assert httpx.get(f"{svc.base_url}/healthz", timeout=5).status_code == 200  # accepted after them
            time.sleep(0.5)  # a refusal would have been written at accept time
            assert silent(proxied, 60)
    finally:
        for sock in held:
            sock.close()


def test_an_ipv6_client_counts_as_its_64_and_a_proxy_has_its_own_cap() -> None:
    """One IPv6 host holds a whole /64, so its addresses share one cap (loopback has only ::1 to test
    over real sockets); a trusted proxy's peer address gets the proxy cap."""
    limits = EdgeLimits(10.0, 100, 20, (ipaddress.ip_network("192.0.2.0/24"),), 500)
    assert limits.client("2001:db8:1:2::1") == ("2001:db8:1:2::/64", 100, 20)
    assert limits.client("2001:db8:1:2:ffff::9")[0] == "2001:db8:1:2::/64"
    assert limits.client("2001:db8:1:3::1")[0] == "2001:db8:1:3::/64"
    assert limits.client("198.51.100.7") == ("198.51.100.7", 100, 20)
    assert limits.client("192.0.2.10") == ("192.0.2.10", 500, 500)
