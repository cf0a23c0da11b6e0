"""One bounded HTTP POST to a checked address: one deadline, a cap on the answer, no second DNS look-up.

``httpx``'s timeouts hold per read, so a receiver answering a byte at a time keeps a request alive
for as long as it likes. Here the request runs on ``httpcore`` (the engine under httpx) with a
network backend of our own: it connects to the address :func:`worker.netguard.resolve` checked,
whatever the URL's name resolves to by then (the URL's host stays the Host header, the TLS server
name and the name the certificate is verified against), and clamps every connect, read and write to
what is left of one deadline. Of the answer's body at most ``max_bytes`` are read, then the
connection is closed.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass

import httpcore
import httpx

from worker.netguard import Target

READ_CHUNK = 16 * 1024


class Deadline:
    """A moment on the monotonic clock; each network step may take only what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def clamp(self, timeout: float | None, error: type[Exception]) -> float:
        left = self.left()
        if left <= 0:
            raise error("the delivery deadline passed")
        return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(min(max_bytes, READ_CHUNK), self._deadline.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        timeout = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        wrapped = self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _Stream(wrapped, self._deadline)

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class PinnedBackend(httpcore.NetworkBackend):
    """Connects to the checked address only, and only for the checked host and port."""

    def __init__(self, target: Target, deadline: Deadline) -> None:
        self._target = target
        self._deadline = deadline
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if host.strip("[]").lower() != self._target.host.strip("[]").lower() or port != self._target.port:
            raise httpcore.ConnectError("not the checked target")
        timeout = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(self._target.address, port, timeout, local_address, socket_options)
        return _Stream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("no unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body_bytes: int  # how many bytes of the body were read (at most the cap, give or take one chunk)
    truncated: bool  # the body went on past the cap and was not read


def post(
    target: Target, url: str, body: bytes, headers: dict[str, str], *, deadline: Deadline, max_bytes: int
) -> Answer:
    """POST ``body`` to ``url`` at ``target.address``, all before ``deadline``; raises ``httpcore`` errors."""
    seconds = deadline.clamp(None, httpcore.ConnectTimeout)
    context = httpx.create_ssl_context()  # certifi's roots, as every other request of the worker
    with httpcore.ConnectionPool(
        ssl_context=context, network_backend=PinnedBackend(target, deadline), max_connections=1, retries=0
    ) as pool:
        timeouts = {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}
        with pool.stream(
            "POST", url, headers=list(headers.items()), content=body, extensions={"timeout": timeouts}
        ) as response:
            read, truncated = 0, False
            if max_bytes > 0:
                for chunk in response.iter_stream():
                    read += len(chunk)
                    if read >= max_bytes:
                        truncated = True
                        break
            else:
                truncated = True
            return Answer(response.status, read, truncated)
