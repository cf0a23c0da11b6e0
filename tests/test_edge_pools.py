"""Number pools under attack over real HTTP (uvicorn) and real Redis: draining, rotated X-Forwarded-For
hops, made-up counters. The test client is the trusted proxy (127.0.0.1) and names the client hop."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import cast

import httpx
import orjson
import pytest
from redis import Redis

from config.settings import Settings
from tests.ingest_helpers import ingest_settings
from tests.pipeline import running_ingest
from worker.intake.pools import MAX_LEASE_RECORD_BYTES, MAX_SESSION_URL_BYTES, MAX_SESSION_USER_ID, NumberPools
from worker.intake.routing import Route
from worker.intake.service import build_intake
from worker.runtime import Runtime

COUNTER, OTHER = 606, 707
POOL = [f"+7495333000{n}" for n in range(5)]
OTHER_POOL = ["+74953330100", "+74953330101"]
FALLBACK = "+74953339999"


@pytest.fixture
def edge(make_settings: Callable[..., Settings]) -> Iterator[tuple[httpx.Client, Runtime]]:
    settings = ingest_settings(
        make_settings,
        ingest_trusted_proxies=["127.0.0.1/32"],
        pool_fallback_numbers={COUNTER: FALLBACK},
        session_rate_per_ip=1000,
    )
    rt = Runtime(settings)
    build_intake(rt).routing.add(
        [Route(n, COUNTER, "dynamic") for n in POOL] + [Route(n, OTHER, "dynamic") for n in OTHER_POOL]
    )
    with running_ingest(settings) as base, httpx.Client(base_url=base) as http:
        yield http, rt
    rt.close()


def ask(http: httpx.Client, client_id: str, forwarded: str, counter: int = COUNTER) -> httpx.Response:
    return http.get(
        "/v1/number", params={"counter": counter, "ClientId": client_id}, headers={"X-Forwarded-For": forwarded}
    )


def test_fifty_new_client_ids_from_one_address_do_not_drain_a_pool_of_five(
    edge: tuple[httpx.Client, Runtime],
) -> None:
    http, _ = edge
    shown = [ask(http, f"{9000 + n}", "198.51.100.7").json() for n in range(50)]
    pool_numbers = {a["number"] for a in shown if not a["fallback"]}
    assert len(pool_numbers) <= 2 and sum(not a["fallback"] for a in shown) <= 2
    assert all(a["number"] == FALLBACK for a in shown if a["fallback"])
    # A visitor at another address still gets a pool number.
    other = ask(http, "123456", "203.0.113.20").json()
    assert other["fallback"] is False and other["number"] in POOL
    # Neighbours in the same /24 share one limit too: 4 live leases at most.
    neighbours = [ask(http, f"{7000 + n}", f"198.51.100.{20 + n}").json() for n in range(6)]
    assert sum(not a["fallback"] for a in neighbours) <= 2  # 2 of the /24's 4 are held by .7 already


def test_a_first_lease_is_short_and_only_a_returning_visitor_extends_it(
    make_settings: Callable[..., Settings],
) -> None:
    settings = ingest_settings(make_settings, pool_first_lease_seconds=1, pool_lease_seconds=600)
    rt = Runtime(settings)
    build_intake(rt).routing.add([Route(POOL[0], COUNTER, "dynamic")])
    try:
        with running_ingest(settings) as base, httpx.Client(base_url=base) as http:

            def number(client_id: str) -> dict[str, object]:
                return dict(http.get("/v1/number", params={"counter": COUNTER, "ClientId": client_id}).json())

            assert number("1")["number"] == POOL[0]  # a one-shot bot holds it for 1 s only
            assert number("2")["fallback"] is True
            time.sleep(1.3)
            first = number("2")
            assert first["number"] == POOL[0]
            again = number("2")  # the visitor returns: the full lease
            assert str(again["expires_at"]) > str(first["expires_at"])
            time.sleep(1.3)
            assert number("3")["fallback"] is True
    finally:
        rt.close()


def test_rotated_forwarded_for_hops_are_one_client(edge: tuple[httpx.Client, Runtime]) -> None:
    http, rt = edge
    # The attacker writes any hops it likes before our proxy appends the address it saw.
    shown = [ask(http, f"{5000 + n}", f"10.{n}.{n}.{n}, 192.0.2.{n}, 198.51.100.99").json() for n in range(20)]
    assert sum(not a["fallback"] for a in shown) <= 2
    # The per-address rate is one limit across counters, whatever the hops say.
    limited = rt.settings.model_copy(update={"session_rate_per_ip": 5})
    with running_ingest(limited) as base, httpx.Client(base_url=base) as quick:
        codes = [
            ask(quick, f"{6000 + n}", f"10.9.{n}.1, 198.51.100.77", COUNTER if n % 2 else OTHER).status_code
            for n in range(12)
        ]
    assert codes.count(429) >= 6, codes


def test_untrusted_peers_cannot_choose_their_address(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings, session_rate_per_ip=1000)  # no trusted proxies
    rt = Runtime(settings)
    build_intake(rt).routing.add([Route(n, COUNTER, "dynamic") for n in POOL])
    try:
        with running_ingest(settings) as base, httpx.Client(base_url=base) as http:
            shown = [ask(http, f"{4000 + n}", f"203.0.113.{n}").json() for n in range(10)]
        assert sum(not a["fallback"] for a in shown) <= 2  # X-Forwarded-For ignored: all are 127.0.0.1
    finally:
        rt.close()


def test_a_counter_without_a_pool_writes_nothing(edge: tuple[httpx.Client, Runtime]) -> None:
    http, rt = edge
    raw = Redis.from_url(rt.settings.redis_url)
    pattern = f"{rt.settings.namespace}:{{s*"
    before = sorted(raw.scan_iter(match=pattern, count=1000))
    for counter in (999_001, 999_002, 999_003):
        answer = http.get("/v1/number", params={"counter": counter, "ClientId": "1"})
        assert answer.status_code == 200 and answer.json()["fallback"] is True
    after = sorted(raw.scan_iter(match=pattern, count=1000))
    raw.close()
    assert after == before
    assert all(int(c) not in (999_001, 999_002, 999_003) for c in _exhausted(rt))


def _exhausted(rt: Runtime) -> list[str]:
    fields: list[str] = []
    for shard in range(rt.keys.shards):
        fields += [str(f) for f in rt.redis.hkeys(rt.keys.pool_exhausted(shard))]
    return fields


def test_a_lease_record_is_bounded_in_bytes(edge: tuple[httpx.Client, Runtime]) -> None:
    """A lease record used to keep a 2 KB URL and a 250-character UserId for the whole history; now
    the session API refuses over-long ids and keeps a landing URL of at most 256 bytes."""
    http, rt = edge
    log = rt.keys.pool_log(COUNTER)
    # Over-long identifiers are refused with the field and rule named, and nothing is stored.
    for field, value in (("UserId", "u" * (MAX_SESSION_USER_ID + 1)), ("ClientId", "1" * 21), ("Yclid", "2" * 21)):
        answer = http.post("/v1/number", json={"counter": COUNTER, field: value},
                           headers={"X-Forwarded-For": "198.51.100.50"})  # fmt: skip
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == field
        assert answer.json()["errors"][0]["rule"] == "string_too_long"
    assert rt.redis.hlen(log) == 0
    # The largest values allowed, chosen to cost the most bytes once stored as JSON.
    worst = {
        "counter": COUNTER,
        "ClientId": "9" * 20,
        "Yclid": "8" * 20,
        "UserId": "\U0001f600" * MAX_SESSION_USER_ID,  # 4 bytes of UTF-8 each
        "URL": "https://shop.example/" + '"' * 1500 + "?utm_source=" + "q" * 400 + "#fragment",
    }
    for n in range(5):  # one address per lease (per-address and per-/24 caps)
        answer = http.post("/v1/number", json={**worst, "ClientId": f"{n}" * 20},
                           headers={"X-Forwarded-For": f"203.0.{113 + n}.9"})  # fmt: skip
        assert answer.status_code == 200 and answer.json()["fallback"] is False, answer.text
    raw = Redis.from_url(rt.settings.redis_url)
    records = [cast(bytes, v) for v in raw.hvals(log)]
    raw.close()
    assert len(records) == 5
    for record in records:
        assert len(record) <= MAX_LEASE_RECORD_BYTES, len(record)
        session = orjson.loads(record.split(b"|", 3)[3])
        assert len(session["URL"].encode()) <= MAX_SESSION_URL_BYTES and "?" not in session["URL"]
        assert session["UserId"] == worst["UserId"]
    # A short URL keeps its query (campaign tags), never its fragment.
    answer = http.post("/v1/number", json={"counter": OTHER, "ClientId": "4242", "URL": "https://s.example/p?utm=1#x"},
                       headers={"X-Forwarded-For": "192.0.2.200"})  # fmt: skip
    assert answer.status_code == 200
    (kept,) = cast(list[str], rt.redis.hvals(rt.keys.pool_log(OTHER)))
    assert orjson.loads(kept.split("|", 3)[3])["URL"] == "https://s.example/p?utm=1"


def test_lease_records_of_before_are_still_read(edge: tuple[httpx.Client, Runtime]) -> None:
    """A record the previous release wrote (a 2 KB URL, a 250-character UserId) still attributes a call."""
    _, rt = edge
    now_ms = int(time.time() * 1000)
    old = orjson.dumps({"UserId": "u" * 250, "URL": "https://old.example/" + "p" * 2000}).decode()
    rt.redis.hset(rt.keys.pool_log(COUNTER), "77", f"{POOL[4]}|{now_ms - 60_000}|{now_ms + 60_000}|{old}")
    rt.redis.zadd(rt.keys.pool_history(COUNTER, POOL[4]), {"77": now_ms - 60_000})
    (found,) = NumberPools(rt).attribute([(COUNTER, POOL[4], now_ms // 1000)])
    assert found is not None and found.ids == {"UserId": "u" * 250}
    assert found.url is not None and len(found.url) > 2000
