"""Dynamic number pools: leases, the session API, and calls credited to the session that held the number."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from config.settings import Settings
from ingest.pbx.asterisk import AsteriskConfig
from ingest.pbx.cdr_csv import CdrCsvImporter
from tests.ingest_helpers import ingest_settings, stored_rows
from tests.pipeline import running_ingest
from worker.intake.pools import NumberPools, Session
from worker.intake.routing import Route
from worker.intake.service import build_intake
from worker.model.inbound import InboundCall
from worker.runtime import Runtime

POOL = ("+74952220001", "+74952220002")
STATIC_NUMBER = "+74952220099"
COUNTER = 606


@pytest.fixture
def rt(make_settings: Callable[..., Settings]) -> Iterator[Runtime]:
    runtime = Runtime(
        ingest_settings(make_settings, pool_lease_seconds=2, pool_fallback_numbers={COUNTER: "+74952220000"}, shards=2)
    )
    build_intake(runtime).routing.add(
        [Route(n, COUNTER, "dynamic") for n in POOL] + [Route(STATIC_NUMBER, COUNTER, "static", "billboard")]
    )
    yield runtime
    runtime.close()


def visitor(client_id: str, url: str = "https://shop.example/landing") -> Session:
    return Session.model_validate({"counter": COUNTER, "ClientId": client_id, "URL": url})


def call_to(number: str, started: int, call_id: str, **extra: Any) -> InboundCall:
    return InboundCall("asterisk", call_id, started, True, number, caller="+79161234567", talk=30, **extra)


def test_two_visitors_at_once_get_different_numbers_and_a_returning_one_keeps_hers(rt: Runtime) -> None:
    pools = NumberPools(rt)
    first = pools.lease(visitor("111"))
    second = pools.lease(visitor("222"))
    assert {first.number, second.number} == set(POOL)
    again = pools.lease(visitor("111"))
    assert again.number == first.number and again.expires_at_ms >= first.expires_at_ms
    assert not (first.fallback or second.fallback or again.fallback)


def test_an_exhausted_pool_answers_the_fallback_and_counts_it(rt: Runtime) -> None:
    pools = NumberPools(rt)
    pools.lease(visitor("1"), "10.0.1.1", "10.0.1.0/24")
    pools.lease(visitor("2"), "10.0.2.1", "10.0.2.0/24")
    third = pools.lease(visitor("3"), "10.0.3.1", "10.0.3.0/24")
    assert third.fallback and third.number == "+74952220000"
    pools.lease(visitor("4"), "10.0.4.1", "10.0.4.0/24")
    assert pools.exhausted() == {COUNTER: 2}


def test_a_freed_number_goes_to_the_next_visitor_least_recently_used_first(rt: Runtime) -> None:
    pools = NumberPools(rt)
    a = pools.lease(visitor("1"))
    time.sleep(0.05)
    b = pools.lease(visitor("2"))
    time.sleep(2.1)  # both leases have ended; a's ended first
    assert pools.lease(visitor("3")).number == a.number
    assert pools.lease(visitor("4")).number == b.number


def test_a_call_goes_to_the_session_that_held_the_number_at_its_start(rt: Runtime) -> None:
    pools = NumberPools(rt)
    intake = build_intake(rt)
    one = pools.lease(visitor("111", "https://shop.example/first"))
    first_call_at = math.ceil(time.time())  # within the first visitor's lease
    intake.routing.remove([POOL[1]])  # one number only: it must pass from one visitor to the other
    time.sleep(max(0.0, one.expires_at_ms / 1000 - time.time()) + 0.1)
    two = pools.lease(visitor("222", "https://shop.example/second"))
    assert two.number == one.number
    later_call_at = math.ceil(time.time())  # the number now belongs to the second visitor
    outcomes = intake.accept(
        [
            call_to(str(one.number), later_call_at, "late-call"),
            call_to(str(one.number), first_call_at, "early-call"),
            call_to(STATIC_NUMBER, later_call_at, "billboard-call", ids={"Yclid": "987"}),
            call_to(str(one.number), first_call_at - 3600, "nobody-call"),  # before any lease
        ]
    )
    assert [o.status for o in outcomes] == ["accepted", "accepted", "accepted", "held"], outcomes
    assert outcomes[3].reason == "no_lease"
    rows = {row["CallTrackerURL"] if "CallTrackerURL" in row else row.get("ClientId", row.get("Yclid")): row
            for row in stored_rows(rt)}  # fmt: skip
    by_client = {row.get("ClientId") or row.get("Yclid"): row for row in rows.values()}
    assert by_client["222"]["URL"] == "https://shop.example/second" and by_client["222"]["StaticCall"] == "0"
    assert by_client["111"]["URL"] == "https://shop.example/first" and by_client["111"]["StaticCall"] == "0"
    billboard = by_client["987"]
    assert billboard["StaticCall"] == "1" and billboard["Tag"] == "billboard"


def test_a_cdr_imported_two_days_late_goes_to_who_held_the_reused_number_then(rt: Runtime, tmp_path: Path) -> None:
    number = POOL[0]
    two_days_ago = int(time.time()) - 2 * 86_400
    # Two days ago visitor 111 held the number for half an hour (as lease.lua would have logged it).
    log = rt.keys.pool_log(COUNTER)
    rt.redis.hset(log, "9001", f"{number}|{two_days_ago * 1000}|{(two_days_ago + 1800) * 1000}|"
                  + orjson.dumps({"ClientId": "111", "URL": "https://shop.example/then"}).decode())  # fmt: skip
    rt.redis.zadd(rt.keys.pool_history(COUNTER, number), {"9001": two_days_ago * 1000})
    rt.redis.set(rt.keys.pool_seq(COUNTER), 9001)
    # Since then the number was reused: today visitor 222 holds it.
    pools = NumberPools(rt)
    rt.redis.zadd(rt.keys.pool(COUNTER), {POOL[1]: int(time.time() * 1000) + 600_000})  # the other one is busy
    assert pools.lease(visitor("222")).number == number
    now = math.ceil(time.time())
    master = tmp_path / "Master.csv"
    master.write_text(cdr(1, number, two_days_ago + 600) + cdr(2, number, now), encoding="utf-8")
    settings = rt.settings
    importer = CdrCsvImporter(master, build_intake(rt), rt.redis, rt.keys, AsteriskConfig.from_settings(settings),
                              settings.cdr_csv_columns)  # fmt: skip
    stats = importer.run(follow=False)
    assert (stats.rows, stats.accepted) == (2, 2)
    by_client = {row["ClientId"]: row for row in stored_rows(rt)}
    assert by_client["111"]["URL"] == "https://shop.example/then"
    assert by_client["111"]["DateTime"] == str(two_days_ago + 600)
    assert "222" in by_client and by_client["222"]["StaticCall"] == "0"


def cdr(n: int, dst: str, start: int) -> str:
    def fmt(t: int) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")

    strings = ["", "79161234567", dst.lstrip("+"), "from-trunk", '"Caller" <79161234567>', "SIP/trunk-1",
               "SIP/101-1", "Dial", "SIP/101,30"]  # fmt: skip
    cells = [f'"{s.replace(chr(34), chr(34) * 2)}"' for s in strings]
    cells += [f'"{fmt(start)}"', f'"{fmt(start + 5)}"', f'"{fmt(start + 65)}"', "65", "60", '"ANSWERED"']
    cells += ['"DOCUMENTATION"', f'"1715690231.{n}"', '""']
    return ",".join(cells) + "\n"


def test_session_api_over_http(rt: Runtime, make_settings: Callable[..., Settings]) -> None:
    settings = rt.settings.model_copy(
        update={"session_allowed_origins": ["https://shop.example"], "session_rate_per_ip": 5}
    )
    with running_ingest(settings) as base, httpx.Client(base_url=base) as http:
        preflight = http.options("/v1/number", headers={"Origin": "https://shop.example",
                                                         "Access-Control-Request-Method": "POST"})  # fmt: skip
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
        first = http.get("/v1/number", params={"counter": COUNTER, "ClientId": "111"},
                         headers={"Origin": "https://shop.example"})  # fmt: skip
        assert first.status_code == 200 and first.json()["number"] in POOL
        assert first.headers["access-control-allow-origin"] == "https://shop.example"
        # Nothing of other sessions: the lease, and what the site tag needs to swap and renew it.
        assert set(first.json()) == {"number", "expires_at", "fallback", "seconds", "replace", "selector"}
        again = http.post("/v1/number", json={"counter": COUNTER, "ClientId": "111", "URL": "https://shop.example/p"})
        assert again.json()["number"] == first.json()["number"]
        foreign = http.get("/v1/number", params={"counter": COUNTER, "ClientId": "222"},
                           headers={"Origin": "https://evil.example"})  # fmt: skip
        assert "access-control-allow-origin" not in foreign.headers
        bad = http.get("/v1/number", params={"counter": "x", "ClientId": "abc", "URL": "javascript:1"})
        assert bad.status_code == 422
        assert {e["field"] for e in bad.json()["errors"]} == {"counter", "ClientId", "URL"}
        assert http.get("/v1/number", params={"counter": COUNTER}).json()["errors"][0]["field"] == (
            "ClientId|UserId|Yclid"
        )
        assert http.get("/v1/number", params={"counter": COUNTER, "ClientId": "1", "x": "1"}).status_code == 422
        codes = [http.get("/v1/number", params={"counter": COUNTER, "ClientId": str(n)}).status_code for n in range(8)]
        assert 429 in codes  # five a second from one address
    assert int(rt.redis.hlen(rt.keys.pool_sessions(COUNTER))) <= len(POOL)
