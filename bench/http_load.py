"""Load on the ingestion service over loopback: ``wrk`` when installed, else a Python generator.

``wrk`` (Debian package ``wrk``; ``apt-get install wrk``) runs a Lua script: single-call requests each
carry a fresh ``call_id``; bulk requests post the same NDJSON body of ``lines`` calls again and again
(repeats are dropped downstream, the service does the same work for each). The Python fallback
(httpx over asyncio, in the harness process) is marked ``generator: python`` in the results, since it
may itself be the limit.

Only 2xx answers count (issue 26): every script counts the answers outside 200-299 in its
``response`` hook and prints them when done (wrk's own "Non-2xx or 3xx" line counts 3xx as success);
:attr:`LoadResult.rate` is 2xx answers per second and :attr:`LoadResult.errors` the rest plus socket
errors, which the report prints beside every figure.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

JSON = "application/json"

# Appended to every script: counts the answers outside 200-299 per thread and prints their sum.
COUNT_LUA = """
non2xx = 0
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("non2xx") end
  io.write(string.format("non-2xx answers: %d\\n", total))
end
"""

SINGLE_LUA = """
local n = 0
local base = {base}
request = function()
  n = n + 1
  local body = string.format(
    '{{"call_id":"{run}-%d-%d","to":"+7495000%04d","from":"+7916%07d","start":%d,"answer":%d,"end":%d,"ClientId":"1556018960%d"}}',
    tid or 0, n, n % {numbers}, n % 10000000, base, base + 5, base + 65, n)
  return wrk.format("POST", "/v1/calls", {{["Content-Type"] = "application/json"}}, body)
end
"""

BULK_LUA = """
local f = io.open("{path}", "rb")
local body = f:read("*a")
f:close()
request = function()
  return wrk.format("POST", "/v1/calls/bulk", {{["Content-Type"] = "application/x-ndjson"}}, body)
end
"""


SINGLE_CONNECTIONS = 32  # single calls and the session API: wrk -c32
SESSION_CONNECTIONS = 32


def bulk_connections(workers: int) -> int:
    """Two bulk requests in flight per service process: each 1,000-line batch keeps one process busy."""
    return 2 * workers


class NoAnswers(RuntimeError):
    """A load run with no 2xx answer, or no time measured: it has no rate to report."""


@dataclass
class LoadResult:
    generator: str
    answers: int  # every HTTP answer read, whatever its status
    seconds: float
    non2xx: int
    socket_errors: int = 0

    @property
    def requests(self) -> int:
        """The 2xx answers: the only ones a rate counts."""
        return self.answers - self.non2xx

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors

    @property
    def rate(self) -> float:
        """2xx answers per second; :class:`NoAnswers` when there were none (never a rate of 0 or 1/0)."""
        if self.requests <= 0 or self.seconds <= 0:
            raise NoAnswers(
                f"{self.generator}: {self.requests} 2xx answers in {self.seconds:g} s "
                f"({self.non2xx} non-2xx, {self.socket_errors} socket errors)"
            )
        return self.requests / self.seconds


def tracking_number(i: int) -> str:
    return f"+7495000{i:04d}"


def generic_call(run: str, n: int, numbers: int, base: int) -> dict[str, object]:
    return {
        "call_id": f"{run}-bulk-{n}",
        "to": tracking_number(n % numbers),
        "from": f"+7916{n % 10_000_000:07d}",
        "start": base,
        "answer": base + 5,
        "end": base + 65,
        "ClientId": f"1556018960{n}",
    }


def bulk_body(run: str, lines: int, numbers: int, base: int) -> bytes:
    return b"\n".join(orjson.dumps(generic_call(run, n, numbers, base)) for n in range(lines)) + b"\n"


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _wrk(url: str, script: str, seconds: float, connections: int) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script + COUNT_LUA)
        path = handle.name
    try:
        out = subprocess.run(  # noqa: S603
            [shutil.which("wrk") or "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
             "--timeout", "30s", "-s", path, url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        Path(path).unlink(missing_ok=True)
    return parse_wrk(out)


def parse_wrk(out: str) -> LoadResult:
    """wrk's summary with :data:`COUNT_LUA`'s line; a summary without that line is an error."""
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    counted = re.search(r"non-2xx answers: (\d+)", out)
    if done is None or counted is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    took = float(done.group(2)) * (0.001 if done.group(3) == "ms" else 1.0)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    sockets = sum(int(x) for x in socket_errors.groups()) if socket_errors else 0
    return LoadResult("wrk", int(done.group(1)), took, int(counted.group(1)), sockets)


async def _python_load(url: str, bodies: list[tuple[str, bytes, str]], seconds: float, connections: int) -> LoadResult:
    count = non2xx = failed = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:

        async def loop(worker: int) -> None:
            nonlocal count, non2xx, failed
            i = worker
            while time.monotonic() < deadline:
                path, body, ctype = bodies[i % len(bodies)]
                i += connections
                try:
                    response = await client.post(path, content=body, headers={"content-type": ctype})
                except httpx.HTTPError:
                    failed += 1
                    continue
                count += 1
                non2xx += not 200 <= response.status_code <= 299

        began = time.monotonic()
        await asyncio.gather(*(loop(w) for w in range(connections)))
        took = time.monotonic() - began
    return LoadResult("python", count, took, non2xx, failed)


SESSION_LUA = """
local n = 0
request = function()
  n = n + 1
  local path = string.format("/v1/number?counter={counter}&ClientId=%d&URL=https%%3A%%2F%%2Fshop.example%%2Fp",
    1700000000000000000 + n % {visitors})
  return wrk.format("GET", path)
end
"""


def session_requests(url: str, counter: int, visitors: int, seconds: float, connections: int) -> LoadResult:
    """The session API as sites call it: ``visitors`` sessions coming back again and again."""
    if have_wrk():
        return _wrk(url, SESSION_LUA.format(counter=counter, visitors=visitors), seconds, connections)
    bodies = []  # GET requests: the Python generator posts the same fields as JSON instead
    for n in range(visitors):
        doc = {"counter": counter, "ClientId": str(1_700_000_000_000_000_000 + n), "URL": "https://shop.example/p"}
        bodies.append(("/v1/number", orjson.dumps(doc), JSON))
    return asyncio.run(_python_load(url, bodies, seconds, connections))


def single_calls(url: str, run: str, numbers: int, seconds: float, connections: int) -> LoadResult:
    base = int(time.time()) - 600
    if have_wrk():
        script = SINGLE_LUA.format(base=base, run=run, numbers=numbers)
        return _wrk(url, script, seconds, connections)
    bodies = [
        ("/v1/calls", orjson.dumps({**generic_call(run, n, numbers, base), "call_id": f"{run}-{n}"}), JSON)
        for n in range(20_000)
    ]
    return asyncio.run(_python_load(url, bodies, seconds, connections))


def bulk_calls(url: str, run: str, numbers: int, lines: int, seconds: float, connections: int) -> LoadResult:
    base = int(time.time()) - 600
    body = bulk_body(run, lines, numbers, base)
    if have_wrk():
        with tempfile.NamedTemporaryFile("wb", suffix=".ndjson", delete=False) as handle:
            handle.write(body)
            path = handle.name
        try:
            return _wrk(url, BULK_LUA.format(path=path), seconds, connections)
        finally:
            Path(path).unlink(missing_ok=True)
    return asyncio.run(_python_load(url, [("/v1/calls/bulk", body, "application/x-ndjson")], seconds, connections))
