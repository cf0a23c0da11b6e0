"""The AMI client against a double that speaks the AMI line protocol over TCP, drops and comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from config.settings import Settings
from ingest.pbx.ami import AmiClient, cdr_handler, encode_action, read_message
from ingest.pbx.asterisk import AsteriskConfig
from tests.ingest_helpers import STATIC, add_routes, ingest_settings, recent, stored_rows
from worker.delivery.drain import drain
from worker.intake.service import build_intake
from worker.runtime import Runtime

SECRET = "ami-secret-0123456789"


def cdr_event(n: int) -> dict[str, str]:
    start = recent(600 + n)
    stamp = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M:%S")
    end = datetime.fromtimestamp(start + 30, UTC).strftime("%Y-%m-%d %H:%M:%S")
    answered = n % 3 != 0
    return {
        "Event": "Cdr",
        "Privilege": "cdr,all",
        "AccountCode": "",
        "Source": f"7916000{n:04d}",
        "Destination": STATIC.lstrip("+"),
        "DestinationContext": "from-trunk",
        "CallerID": f'"Client {n}" <7916000{n:04d}>',
        "Channel": f"SIP/trunk-{n:08x}",
        "DestinationChannel": "SIP/101-0000",
        "LastApplication": "Dial",
        "LastData": "SIP/101,30",
        "StartTime": stamp,
        "AnswerTime": stamp if answered else "",
        "EndTime": end,
        "Duration": "30",
        "BillableSeconds": "25" if answered else "0",
        "Disposition": "ANSWERED" if answered else "NO ANSWER",
        "AMAFlags": "DOCUMENTATION",
        "UniqueID": f"1715690231.{n}",
        "UserField": f"ClientId={1000 + n}",
    }


class AmiDouble:
    """Accepts AMI logins; each connection sends the events queued for it, then drops if told to."""

    def __init__(self) -> None:
        self.sessions: list[tuple[list[dict[str, str]], bool]] = []  # (events, drop after them)
        self.logins = 0
        self.refused = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/5.0.1\r\n")
        login = await read_message(reader)
        if login.get("Action") != "Login" or login.get("Secret") != SECRET:
            self.refused += 1
            writer.write(encode_action({"Response": "Error", "ActionID": login.get("ActionID", ""),
                                        "Message": "Authentication failed"}))  # fmt: skip
            await writer.drain()
            writer.close()
            return
        self.logins += 1
        writer.write(encode_action({"Event": "FullyBooted", "Privilege": "system,all", "Status": "Fully Booted"}))
        writer.write(encode_action({"Response": "Success", "ActionID": login["ActionID"],
                                    "Message": "Authentication accepted"}))  # fmt: skip
        events, drop = self.sessions.pop(0) if self.sessions else ([], False)
        for event in events:
            writer.write(encode_action(event))
            writer.write(encode_action({"Event": "Newchannel", "Channel": "SIP/x"}))  # noise
        await writer.drain()
        if drop:
            writer.close()
            return
        try:
            while await reader.readline():  # answer nothing; keep the link until the client goes
                pass
        except ConnectionError:
            pass


def test_every_cdr_arrives_once_across_a_pbx_restart(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings)
    rt = Runtime(settings)
    add_routes(rt)
    events = [cdr_event(n) for n in range(12)]

    async def scenario() -> AmiClient:
        double = AmiDouble()
        # First connection: 6 events, then the PBX goes away (connection dropped, port closed).
        double.sessions.append((events[:6], True))
        await double.start()
        handler = cdr_handler(build_intake(rt), AsteriskConfig.from_settings(settings), max_backoff=0.2)
        client = AmiClient("127.0.0.1", double.port, "calltrack", SECRET, handler, max_backoff=0.2)
        task = asyncio.create_task(client.run())
        await wait_until(lambda: len(stored_rows(rt)) >= 6, "the first 6 calls")
        await double.stop()
        await asyncio.sleep(0.3)  # the client retries against a closed port meanwhile
        # The PBX is back: it repeats the last event (as a restarted PBX may), then the rest.
        double.sessions.append((events[5:], False))
        await double.start()
        await wait_until(lambda: len(stored_rows(rt)) >= 13, "the remaining calls")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await double.stop()
        assert double.logins == 2
        return client

    client = asyncio.run(scenario())
    assert client.sessions == 2
    rows = stored_rows(rt)
    assert {row["ClientId"] for row in rows} == {str(1000 + n) for n in range(12)}
    result = drain(rt, seal_all=True)
    assert result.read - result.repeats == 12 and result.repeats == 1  # each call once
    by_id = {row["ClientId"]: row for row in rows}
    assert by_id["1000"]["CallMissed"] == "1" and by_id["1000"]["HoldDuration"] == "30"
    assert by_id["1001"]["TalkDuration"] == "25" and by_id["1001"]["HoldDuration"] == "5"
    rt.close()


def test_a_refused_login_is_retried_without_storing(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings)
    rt = Runtime(settings)

    async def scenario() -> int:
        double = AmiDouble()
        await double.start()
        handler = cdr_handler(build_intake(rt), AsteriskConfig.from_settings(settings))
        client = AmiClient("127.0.0.1", double.port, "calltrack", "wrong", handler, max_backoff=0.05)
        task = asyncio.create_task(client.run())
        await wait_until(lambda: double.refused >= 2, "two refused logins")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await double.stop()
        return client.sessions

    assert asyncio.run(scenario()) == 0
    assert stored_rows(rt) == []
    rt.close()


async def wait_until(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
