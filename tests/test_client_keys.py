"""Per-client API keys (issue 22) against a real uvicorn process and real Redis.

Client A holds counter 101, client B counter 202. With A's key, every write for B's counter (a call
to B's number, single and bulk; a conversion and a chat, single and bulk, its counter given as a
number or as digits; a conversion for B's earlier call) is refused and stores nothing; every read of
B's figures, uploads, calls and conversions answers 404 as for an unknown one. Scopes hold, rotated
and revoked keys stop at once, the admin token no longer reads the status API, the operator tokens
still reach everything, and no created key is ever in Redis or in the service's logs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import httpx
import orjson
from redis import Redis

from config.settings import Settings
from tests.accounts_helpers import ADMIN_TOKEN, SECRET_KEY, ctl
from tests.edge_helpers import env_of, ingest_process
from tests.helpers import wait_for
from tests.ingest_helpers import recent, snapshot
from worker.accounts.apikeys import ApiKeys
from worker.dataplane.entries import split
from worker.delivery.drain import drain
from worker.intake.routing import Route
from worker.intake.service import build_intake
from worker.runtime import Runtime

OPERATOR = "operator-ingest-token-0123456789"
STATUS = "operator-status-token-0123456789"
A_NUMBER, B_NUMBER = "+74951110011", "+74951110022"


def key_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        secret_keys=SECRET_KEY,
        accounts_cache_seconds=0,
        routing_cache_seconds=0,
        ingest_api_token=OPERATOR,
        status_api_token=STATUS,
        admin_api_token=ADMIN_TOKEN,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def service(settings: Settings) -> Iterator[tuple[str, list[bytes]]]:
    """The ingestion service as its own process; yields its URL and the log lines it wrote so far."""
    env = env_of(
        settings,
        CALLTRACK_SECRET_KEYS=SECRET_KEY,
        CALLTRACK_ACCOUNTS_CACHE_SECONDS="0",
        CALLTRACK_INGEST_API_TOKEN=OPERATOR,
        CALLTRACK_STATUS_API_TOKEN=STATUS,
        CALLTRACK_ADMIN_API_TOKEN=ADMIN_TOKEN,
        CALLTRACK_METRICA_EMULATOR="true",
        CALLTRACK_LOG_LEVEL="DEBUG",
    )
    with ingest_process(env) as svc:
        yield svc.base_url, svc.logs  # read as they come by ingest_process


def setup_clients(rt: Runtime, base: str) -> None:
    for account, counter in (("client-a", 101), ("client-b", 202)):
        doc = {"id": account, "counters": [{"id": counter}]}
        made = httpx.post(f"{base}/admin/v1/accounts", json=doc, headers=bearer(ADMIN_TOKEN))
        assert made.status_code == 201, made.text
    build_intake(rt).routing.add([Route(A_NUMBER, 101, "static"), Route(B_NUMBER, 202, "static")])


def new_key(base: str, account: str, scopes: Any, name: str = "default") -> str:
    made = httpx.post(
        f"{base}/admin/v1/accounts/{account}/keys", json={"name": name, "scopes": scopes}, headers=bearer(ADMIN_TOKEN)
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["name"] == name and body["key"].startswith(body["prefix"] + "_")
    return str(body["key"])


def call(call_id: str, number: str) -> dict[str, Any]:
    return {"call_id": call_id, "to": number, "start": recent(), "ClientId": "1"}


def event(counter: Any, item_id: str, chat: bool = False) -> dict[str, Any]:
    if chat:
        return {"counter_id": counter, "chat_id": item_id, "source": "tracker", "DateTime": recent(),
                "ChatPlatform": "Telegram", "ChatUsername": "@user", "ClientID": str(10**15)}  # fmt: skip
    return {"counter_id": counter, "conversion_id": item_id, "ClientId": "1", "Target": "paid", "DateTime": recent()}


def ndjson(*docs: dict[str, Any]) -> bytes:
    return b"\n".join(orjson.dumps(d) for d in docs)


def scan_values(settings: Settings, secret: str) -> list[bytes]:
    """Every key name or value of the namespace that holds ``secret``."""
    with Redis.from_url(settings.redis_url) as redis:
        return _scan(redis, settings.namespace, secret)


def _scan(redis: Redis, namespace: str, secret: str) -> list[bytes]:
    hits = []
    needle = secret.encode()
    for name in redis.scan_iter(match=f"{namespace}:*", count=1000):
        kind = redis.type(name)
        values: list[bytes] = [name]
        if kind == b"hash":
            for field, value in cast(dict[bytes, bytes], redis.hgetall(name)).items():
                values += [field, value]
        elif kind == b"string":
            values.append(cast(bytes, redis.get(name)))
        elif kind == b"list":
            values += cast(list[bytes], redis.lrange(name, 0, -1))
        elif kind == b"stream":
            for _, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], redis.xrange(name)):
                values += [*fields.keys(), *fields.values()]
        elif kind in (b"set", b"zset"):
            values += list(cast(list[bytes], redis.zrange(name, 0, -1) if kind == b"zset" else redis.smembers(name)))
        hits += [v for v in values if needle in v]
    return hits


def test_a_client_key_reaches_only_its_own_counters(
    make_settings: Callable[..., Settings], redis: Redis, namespace: str
) -> None:
    settings = key_settings(make_settings)
    rt = Runtime(settings)
    with service(settings) as (base, logs), httpx.Client(base_url=base, timeout=30) as http:
        setup_clients(rt, base)
        key_a = new_key(base, "client-a", ["ingest", "status"])
        key_b = new_key(base, "client-b", "ingest,status")
        a, b, op = bearer(key_a), bearer(key_b), bearer(OPERATOR)

        # B stores a call and a conversion of its own: the data A must never reach.
        assert http.post("/v1/calls", json=call("b-call", B_NUMBER), headers=b).json()["status"] == "accepted"
        assert http.post("/v1/conversions", json=event(202, "b-conv"), headers=b).status_code == 200
        drain(rt)

        # --- writes for B's counter with A's key: refused, nothing stored --------------------------
        before = snapshot(rt)
        refused = http.post("/v1/calls", json=call("x-1", B_NUMBER), headers=a)
        assert refused.status_code == 403 and refused.json()["errors"][0]["rule"] == "not_owned", refused.text
        assert refused.json()["errors"][0]["field"] == "counter_id"
        assert http.post("/v1/calls", json=call("x-2", "+74959999999"), headers=a).status_code == 403  # routed nowhere
        for counter in (202, "202"):
            for chat in (False, True):
                path = "/v1/chats" if chat else "/v1/conversions"
                answer = http.post(path, json=event(counter, f"x-{counter}-{chat}", chat), headers=a)
                assert answer.status_code == 403, answer.text
                assert answer.json()["errors"][0] == {
                    "field": "counter_id",
                    "rule": "not_owned",
                    "message": "is not a counter of this API key's client",
                }
        conv = {"Target": "paid", "DateTime": recent()}
        earlier = http.post("/v1/calls/generic/b-call/conversions", json=conv, headers=a)
        assert earlier.status_code == 422 and earlier.json()["errors"][0]["rule"] == "known_call", earlier.text
        for path, doc in (
            ("/v1/calls/bulk", call("x-3", B_NUMBER)),
            ("/v1/conversions/bulk", event("202", "x-4")),
            ("/v1/chats/bulk", event(202, "x-5", chat=True)),
        ):
            answer = http.post(path, content=ndjson(doc), headers=a)
            assert answer.status_code == 422, answer.text
            line = answer.json()["lines"][0]
            assert line["status"] == "rejected" and line["errors"][0]["field"] == "counter_id"
            assert line["errors"][0]["rule"] == "not_owned"
        assert snapshot(rt) == before

        # A bulk body mixing both: A's own line is stored, B's line is refused by name.
        mixed = http.post("/v1/conversions/bulk", content=ndjson(event(101, "a-1"), event(202, "a-2")), headers=a)
        assert mixed.status_code == 200 and mixed.json()["accepted"] == 1 and mixed.json()["rejected"] == 1
        assert [ln["status"] for ln in mixed.json()["lines"]] == ["accepted", "rejected"]
        calls = http.post("/v1/calls/bulk", content=ndjson(call("a-c1", A_NUMBER), call("a-c2", B_NUMBER)), headers=a)
        assert [ln["status"] for ln in calls.json()["lines"]] == ["accepted", "rejected"], calls.text
        # A's own conversion for its own earlier call is taken.
        assert http.post("/v1/calls", json=call("a-call", A_NUMBER), headers=a).json()["status"] == "accepted"
        drain(rt)
        assert http.post("/v1/calls/generic/a-call/conversions", json=conv, headers=a).status_code == 200

        # --- reads of B's data with A's key: 404, as for something unknown -----------------------
        for path in ("/v1/counters/202", "/v1/counters/202/uploads", "/v1/calls/generic/b-call"):
            answer = http.get(path, headers=a)
            assert answer.status_code == 404, (path, answer.text)
            assert "b-call" not in answer.text or answer.json().get("place") == "unknown"
            assert "batch" not in answer.json() and answer.json().get("counter_id") in (None, 202)
        unknown = http.get("/v1/calls/generic/never-seen", headers=a).json()
        other = http.get("/v1/calls/generic/b-call", headers=a).json()
        assert {k: v for k, v in other.items() if k not in ("error", "call_id")} == {
            k: v for k, v in unknown.items() if k not in ("error", "call_id")
        }
        conv_read = http.get("/v1/conversions/api/b-conv", params={"counter_id": 202}, headers=a)
        assert conv_read.status_code == 404 and conv_read.json()["place"] == "unknown"
        # B reads its own; A reads its own.
        mine = http.get("/v1/calls/generic/b-call", headers=b).json()
        assert mine["counter_id"] == 202 and mine["place"] != "unknown"
        assert http.get("/v1/counters/202", headers=b).status_code == 200
        assert http.get("/v1/counters/101", headers=a).json()["counter_id"] == 101
        assert http.get("/openapi.json", headers=a).status_code == 200

        # A's own call held (no identifier): A sees it, B does not.
        held = http.post("/v1/calls", json={**call("a-held", A_NUMBER), "ClientId": None}, headers=a)
        assert held.json()["status"] == "held", held.text
        assert http.get("/v1/calls/generic/a-held", headers=a).json()["place"] == "held"
        assert http.get("/v1/calls/generic/a-held", headers=b).status_code == 404

        # --- admin API refusals name the field and rule, store nothing ---------------------------
        before = snapshot(rt)
        for account, doc, field in (
            ("nobody", {"scopes": ["ingest"]}, "account"),
            ("client-a", {"scopes": ["ingest", "admin"]}, "scopes"),
            ("client-a", {"scopes": 7}, "scopes"),
            ("client-a", {"name": "x"}, "scopes"),
            ("client-a", {"scopes": "status", "name": "default"}, "name"),
            ("client-a", {"scopes": "status", "name": "a b"}, "name"),
        ):
            answer = http.post(f"/admin/v1/accounts/{account}/keys", json=doc, headers=bearer(ADMIN_TOKEN))
            assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == field, answer.text
        assert http.get("/admin/v1/accounts/nobody/keys", headers=bearer(ADMIN_TOKEN)).status_code == 422
        assert snapshot(rt) == before

        # --- scopes ---------------------------------------------------------------------------------
        reader = bearer(new_key(base, "client-a", ["status"], name="reader"))
        writer = bearer(new_key(base, "client-a", ["ingest"], name="writer"))
        before = snapshot(rt)
        no_scope = http.post("/v1/conversions", json=event(101, "r-1"), headers=reader)
        assert no_scope.status_code == 403 and "'ingest' scope" in no_scope.text
        assert snapshot(rt) == before
        assert http.get("/v1/counters/101", headers=writer).status_code == 403
        assert http.get("/openapi.json", headers=writer).status_code == 403
        assert http.get("/v1/counters/101", headers=reader).status_code == 200

        # --- operator credentials: every counter; the admin token only on /admin/ -----------------
        assert http.get("/v1/counters/202", headers=bearer(STATUS)).status_code == 200
        assert http.get("/v1/calls/generic/b-call", headers=bearer(STATUS)).json()["counter_id"] == 202
        assert http.post("/v1/conversions", json=event(202, "op-1"), headers=op).status_code == 200
        for path in ("/v1/counters/202", "/v1/calls/generic/b-call", "/openapi.json"):
            assert http.get(path, headers=bearer(ADMIN_TOKEN)).status_code == 403
        assert http.post("/v1/conversions", json=event(202, "adm-1"), headers=bearer(ADMIN_TOKEN)).status_code == 403
        assert http.get("/admin/v1/accounts/client-a/keys", headers=a).status_code == 403

        # --- rotation and revocation stop the old key at once -------------------------------------
        rotated = http.post("/admin/v1/accounts/client-a/keys/default/rotate", headers=bearer(ADMIN_TOKEN))
        assert rotated.status_code == 200 and rotated.json()["key"] != key_a
        new_a = rotated.json()["key"]
        assert http.get("/v1/counters/101", headers=a).status_code == 403
        assert http.post("/v1/conversions", json=event(101, "old-1"), headers=a).status_code == 403
        assert http.get("/v1/counters/101", headers=bearer(new_a)).status_code == 200
        listed = http.get("/admin/v1/accounts/client-a/keys", headers=bearer(ADMIN_TOKEN)).json()["keys"]
        assert [k["name"] for k in listed] == ["default", "reader", "writer"]
        assert listed[0]["rotated"] and "key" not in listed[0] and new_a.startswith(listed[0]["prefix"])
        gone = http.delete("/admin/v1/accounts/client-a/keys/default", headers=bearer(ADMIN_TOKEN))
        assert gone.status_code == 200 and gone.json()["revoked"] == "default"
        assert http.get("/v1/counters/101", headers=bearer(new_a)).status_code == 403
        assert http.post("/v1/calls", json=call("rv-1", A_NUMBER), headers=bearer(new_a)).status_code == 403
        # A removed account's keys reach nothing.
        assert http.delete("/admin/v1/accounts/client-b", headers=bearer(ADMIN_TOKEN)).status_code == 200
        assert http.get("/v1/counters/202", headers=b).status_code == 403

        created = [key_a, key_b, new_a, reader["Authorization"][7:], writer["Authorization"][7:]]
        for secret in created:
            assert scan_values(settings, secret) == [], "a key is stored in clear"
    wait_for(lambda: bool(logs), timeout=10, what="the service's logs")
    text = b"".join(logs)
    assert b"signature_refused" in text or b"403" in text  # the logs were captured
    for secret in created:
        assert secret.encode() not in text, "a key reached the logs"
    rt.close()


def test_ctl_keys(make_settings: Callable[..., Settings], redis: Redis, namespace: str) -> None:
    settings = key_settings(make_settings)
    assert ctl(settings, "accounts", "add", "acme", "--counter", "101")[0] == 0

    code, out = ctl(settings, "keys", "create", "acme", "--scope", "ingest,status", "--name", "crm", "--json")
    assert code == 0, out
    made = orjson.loads(out)
    assert made["name"] == "crm" and made["scopes"] == ["ingest", "status"] and made["key"].startswith("ctk_")
    keys = ApiKeys(redis, Runtime(settings).keys)
    assert keys.check(made["key"]) is not None and keys.check(made["key"] + "x") is None

    code, out = ctl(settings, "keys", "list", "acme")
    assert code == 0 and "crm" in out and made["prefix"] in out and made["key"] not in out
    listed = orjson.loads(ctl(settings, "keys", "list", "acme", "--json")[1])["keys"]
    assert listed == [{**{k: made[k] for k in ("name", "prefix", "scopes", "created")}, "rotated": None}]

    code, out = ctl(settings, "keys", "rotate", "acme", "crm")
    assert code == 0 and "ctk_" in out and made["key"] not in out
    assert keys.check(made["key"]) is None
    new = next(word for word in out.split() if word.startswith("ctk_"))
    assert keys.check(new) is not None and keys.check(new).account == "acme"  # type: ignore[union-attr]

    before = snapshot(Runtime(settings))
    for args, message in (
        (("keys", "create", "nobody", "--scope", "ingest"), "account: no account 'nobody'"),
        (("keys", "list", "nobody"), "account: no account 'nobody'"),
        (("keys", "create", "acme", "--scope", "ingest,admin"), "scopes: must be one or more of ingest, status"),
        (("keys", "create", "acme", "--scope", ""), "scopes: must be one or more of ingest, status"),
        (("keys", "create", "acme", "--scope", "ingest", "--name", "crm"), "name: 'crm' is taken"),
        (("keys", "create", "acme", "--scope", "ingest", "--name", "a b"), "name: must be 1 to 64"),
        (("keys", "rotate", "acme", "nope"), "name: account 'acme' has no key named 'nope'"),
        (("keys", "revoke", "acme", "nope"), "name: account 'acme' has no key named 'nope'"),
    ):
        code, out = ctl(settings, *args)
        assert code != 0 and message in out, (args, out)
    assert snapshot(Runtime(settings)) == before

    code, out = ctl(settings, "keys", "revoke", "acme", "crm", "--json")
    assert code == 0 and orjson.loads(out)["revoked"] == "crm"
    assert keys.check(new) is None
    assert orjson.loads(ctl(settings, "keys", "list", "acme", "--json")[1])["keys"] == []
    assert scan_values(settings, new) == [] and scan_values(settings, made["key"]) == []


def test_counter_ids_are_normalised_once_at_the_edge(make_settings: Callable[..., Settings]) -> None:
    """``"999999"`` meets the same served-counter check as ``999999``, single and bulk, for conversions
    and chats; ``"101"`` is stored as counter 101; any other form is refused naming the field."""
    settings = make_settings(routing_cache_seconds=0)
    rt = Runtime(settings)
    build_intake(rt).routing.add([Route(A_NUMBER, 101, "static")])
    try:
        with ingest_process(env_of(settings)) as svc, httpx.Client(base_url=svc.base_url, timeout=30) as http:
            before = snapshot(rt)
            for chat in (False, True):
                path = "/v1/chats" if chat else "/v1/conversions"
                for counter, rule in ((999999, "not_served"), ("999999", "not_served"), (" 999999 ", "not_served"),
                                      (101.0, "positive_integer"), (True, "positive_integer"),
                                      ("101x", "positive_integer"), ("-101", "positive_integer")):  # fmt: skip
                    one = http.post(path, json=event(counter, f"n-{counter}", chat))
                    assert one.status_code == 422, (counter, one.text)
                    assert one.json()["errors"][0]["field"] == "counter_id"
                    assert one.json()["errors"][0]["rule"] == rule, (counter, one.text)
                    many = http.post(f"{path}/bulk", content=ndjson(event(counter, f"m-{counter}", chat)))
                    assert many.status_code == 422, (counter, many.text)
                    assert many.json()["lines"][0]["errors"][0]["rule"] == rule
            assert snapshot(rt) == before
            assert http.post("/v1/conversions", json=event("101", "s-1")).status_code == 200
            bulk = http.post("/v1/chats/bulk", content=ndjson(event("101", "s-2", chat=True), event(101, "s-3", True)))
            assert bulk.json()["accepted"] == 2, bulk.text
        buckets = [
            fields["b"]
            for shard in range(rt.keys.shards)
            for _, group in cast(list[tuple[str, dict[str, str]]], rt.redis.xrange(rt.keys.stream(shard)))
            for fields in split(group)
        ]
        assert len(buckets) == 3 and all(b.startswith("101:") for b in buckets), buckets
    finally:
        rt.close()
