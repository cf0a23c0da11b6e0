"""Hostile webhook receivers on loopback, for the attack tests: each counts the connections it took and
the bytes it served, so a test asserts how much of an attack the worker swallowed, never a duration."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from worker.ops.overview import batches
from worker.runtime import Runtime


@dataclass
class Served:
    connections: int = 0
    sent: int = 0
    requests: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    conn.settimeout(10)
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@contextmanager
def raw_receiver(
    answer: Callable[[socket.socket, Served], None], tls: ssl.SSLContext | None = None
) -> Iterator[tuple[Served, str]]:
    """A TCP server on 127.0.0.1 (TLS with ``tls``): reads each request, then ``answer`` writes what it likes."""
    served = Served()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                if tls is not None:
                    conn = tls.wrap_socket(conn, server_side=True)
                request = _read_request(conn)
                with served.lock:
                    served.requests.append(request)
                answer(conn, served)
            except OSError:
                pass

    def loop() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with served.lock:
                served.connections += 1
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield served, f"{'https' if tls else 'http'}://127.0.0.1:{server.getsockname()[1]}/hook"
    finally:
        stop.set()
        thread.join(5)
        server.close()


def send_counted(conn: socket.socket, served: Served, data: bytes) -> None:
    conn.sendall(data)
    with served.lock:
        served.sent += len(data)


def drip(every: float, total: int) -> Callable[[socket.socket, Served], None]:
    """A full 200 answer, one byte every ``every`` seconds (the status line and headers too)."""

    def answer(conn: socket.socket, served: Served) -> None:
        body = b"x" * total
        data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        conn.settimeout(every * 4 + 5)
        for i in range(len(data)):
            send_counted(conn, served, data[i : i + 1])
            time.sleep(every)

    return answer


def huge(total: int, chunk: int = 64 * 1024) -> Callable[[socket.socket, Served], None]:
    """A 200 answer announcing ``total`` bytes and sending them as fast as the reader takes them."""

    def answer(conn: socket.socket, served: Served) -> None:
        conn.settimeout(5)
        send_counted(conn, served, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"y" * chunk
        for _ in range(total // chunk):
            send_counted(conn, served, block)

    return answer


def status(code: int) -> Callable[[socket.socket, Served], None]:
    def answer(conn: socket.socket, served: Served) -> None:
        send_counted(conn, served, b"HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % code)

    return answer


def tls_context(name: str, tmp: Path, seen: list[str]) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context with a self-signed certificate for ``name`` (its own CA: the returned file);
    ``seen`` collects the server names (SNI) clients asked for."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)

    def sni(_sock: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        seen.append(server_name or "")

    context.sni_callback = sni
    return context, cert_file


def final_batches(rt: Runtime, counter: int) -> set[str]:
    """Batches of ``counter`` whose upload reached a final status in Metrica."""
    return {b.batch_id for b in batches(rt) if b.counter_id == counter and b.state in ("PROCESSED", "LINKAGE_FAILURE")}
