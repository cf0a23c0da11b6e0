"""Asterisk Manager Interface client: log in, take ``Cdr`` events, reconnect after the PBX restarts.

One TCP connection (``Key: Value`` lines, a blank line ends a message). After ``Action: Login``
with ``Events: cdr`` every ``Cdr`` event goes to the handler; the next line is read only once the
handler returned, so a Redis outage stops the reading (the PBX buffers) instead of losing calls.
A silent connection is probed with ``Action: Ping``; a dropped or dead one is reconnected with
exponential back-off and jitter up to ``ami_max_backoff``.

AMI does not replay events missed while disconnected: run the ``Master.csv`` importer beside it
as a backstop (same ``uniqueid``, so a call seen by both is stored once).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Awaitable, Callable

import structlog

from ingest.input import InputError
from ingest.pbx.asterisk import AsteriskConfig, from_ami, to_call
from worker.errors import ProducerError
from worker.intake.service import Intake

log = structlog.get_logger(__name__)
Message = dict[str, str]
Handler = Callable[[Message], Awaitable[None]]
_action_ids = itertools.count(1)


class AmiError(Exception):
    """The PBX answered something this client cannot go on with."""


class AmiLoginError(AmiError):
    """The PBX refused the user or secret."""


async def read_message(reader: asyncio.StreamReader) -> Message:
    """One AMI message (lines up to a blank one); raises ConnectionError at end of stream."""
    message: Message = {}
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("the PBX closed the connection")
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if not text:
            if message:
                return message
            continue
        name, sep, value = text.partition(":")
        if sep:
            message.setdefault(name.strip(), value.strip())


def encode_action(fields: Message) -> bytes:
    return "".join(f"{name}: {value}\r\n" for name, value in fields.items()).encode() + b"\r\n"


class AmiClient:
    """Runs until cancelled: connect, log in, hand each ``Cdr`` event to ``handler``, reconnect."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        handler: Handler,
        *,
        max_backoff: float = 30.0,
        ping_interval: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self._username = username
        self._secret = secret
        self._handler = handler
        self._max_backoff = max_backoff
        self._ping_interval = ping_interval
        self._connect_timeout = connect_timeout
        self.sessions = 0  # successful logins, for tests and logs

    async def run(self) -> None:
        backoff = min(0.5, self._max_backoff)
        while True:
            sessions = self.sessions
            try:
                await self._session()
            except AmiLoginError as error:
                log.error("ami_login_refused", host=self.host, port=self.port, error=str(error))
                backoff = self._max_backoff
            except (TimeoutError, OSError, ConnectionError, AmiError) as error:
                log.warning("ami_disconnected", host=self.host, port=self.port, error=type(error).__name__)
            if self.sessions > sessions:  # it was up: start the back-off again
                backoff = min(0.5, self._max_backoff)
            delay = backoff * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, self._max_backoff)

    async def _session(self) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout=self._connect_timeout
        )
        try:
            banner = await asyncio.wait_for(reader.readline(), timeout=self._connect_timeout)
            if not banner.startswith(b"Asterisk Call Manager"):
                raise AmiError("not an Asterisk Manager Interface")
            await self._login(reader, writer)
            self.sessions += 1
            log.info("ami_connected", host=self.host, port=self.port, session=self.sessions)
            await self._consume(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    async def _login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        action_id = f"ctw-login-{next(_action_ids)}"
        writer.write(
            encode_action(
                {
                    "Action": "Login",
                    "ActionID": action_id,
                    "Username": self._username,
                    "Secret": self._secret,
                    "Events": "cdr",
                }
            )
        )
        await writer.drain()
        while True:
            message = await asyncio.wait_for(read_message(reader), timeout=self._connect_timeout)
            if message.get("ActionID") != action_id or "Response" not in message:
                continue
            if message["Response"].lower() != "success":
                raise AmiLoginError(message.get("Message", "authentication failed")[:200])
            return

    async def _consume(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unanswered_pings = 0
        while True:
            try:
                message = await asyncio.wait_for(read_message(reader), timeout=self._ping_interval)
            except TimeoutError:
                unanswered_pings += 1
                if unanswered_pings > 1:
                    raise ConnectionError("the PBX stopped answering pings") from None
                writer.write(encode_action({"Action": "Ping", "ActionID": f"ctw-ping-{next(_action_ids)}"}))
                await writer.drain()
                continue
            unanswered_pings = 0
            if message.get("Event") == "Cdr":
                await self._handler(message)


def cdr_handler(intake: Intake, config: AsteriskConfig, *, max_backoff: float = 30.0) -> Handler:
    """Stores each ``Cdr`` event through the intake; waits out a Redis outage instead of losing it."""

    async def handle(event: Message) -> None:
        try:
            result = to_call(from_ami(event), config)
        except InputError as error:
            log.warning("cdr_event_rejected", error=str(error))
            return
        if isinstance(result, str):
            return
        backoff = 0.5
        while True:
            try:
                outcome = (await asyncio.to_thread(intake.accept, [result]))[0]
                break
            except ProducerError as error:
                log.error("cdr_store_failed", error=str(error), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max_backoff)
        if outcome.status == "rejected":
            log.warning("cdr_event_rejected", error=outcome.reason)

    return handle
