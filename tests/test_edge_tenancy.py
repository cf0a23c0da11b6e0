"""Tenancy at the edge (issue 22) under attack, over a real uvicorn process, real Redis and the real intake.

Client A holds valid Twilio, Zadarma and Mango credentials of its own; it signs calls to client B's
tracking number. Each is refused with 403 and ``calls_rejected{reason="foreign_number"}``, and nothing
of it is stored, held or notified (B's ``call.held`` webhook event included). A routing entry cannot
move a number across clients without the operator's flag; held calls are capped per client; a held
call remembers whose credential brought it, so a replay routes it only to that client's counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlencode

import httpx
import orjson
from click.testing import CliRunner
from pydantic import SecretStr

from config.settings import Settings
from ctl.__main__ import main
from ctl.context import Context
from ingest.signatures import mango_sign, twilio_signature
from tests.accounts_helpers import SECRET_KEY
from tests.edge_helpers import env_of, ingest_process
from tests.helpers import wait_for
from tests.ingest_helpers import held_calls, snapshot, stored_rows
from tests.test_ingest_http import mango_summary, twilio_form, zadarma_form, zadarma_sign
from worker.accounts.apikeys import ApiKeys
from worker.accounts.model import Account, CounterIn, Telephony
from worker.errors import ForeignCallError
from worker.intake.held import UNKNOWN_NUMBER
from worker.intake.ownership import FOREIGN_COUNTER, CounterOwners
from worker.intake.routing import Route, RouteOwnerError
from worker.intake.service import build_intake
from worker.model.inbound import InboundCall
from worker.notify.outbox import sweep
from worker.runtime import Runtime

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
A_NUMBER, B_NUMBER, UNKNOWN_A, UNKNOWN_B = "+74951110101", "+74952220202", "+74959990001", "+74959990002"
A_COUNTER, B_COUNTER, DEPLOYMENT_COUNTER = 1001, 2001, 3001
DEPLOYMENT_NUMBER = "+74953330303"


@dataclass(frozen=True)
class Client:
    id: str
    twilio_sid: str
    twilio_token: str
    zadarma: str
    zadarma_secret: str
    mango: str
    mango_key: str
    mango_salt: str


A = Client("acme", "AC" + "a" * 32, "acme-twilio-token-0123456789", "za", "acme-zadarma-secret-0123",
           "ma", "a" * 32, "s" * 32)  # fmt: skip
B = Client("beta", "AC" + "b" * 32, "beta-twilio-token-0123456789", "zb", "beta-zadarma-secret-0123",
           "mb", "b" * 32, "t" * 32)  # fmt: skip
OPERATOR_SID, OPERATOR_TOKEN = "AC" + "0" * 32, "operator-twilio-token-0123456789"


def account(client: Client, counter: int, *, webhook: bool = False) -> Account:
    return Account(
        id=client.id,
        counters=(CounterIn(id=counter),),
        telephony=(
            Telephony("twilio", client.twilio_sid, SecretStr(client.twilio_token)),
            Telephony("zadarma", client.zadarma, SecretStr(client.zadarma_secret)),
            Telephony("mango", client.mango, SecretStr(f"{client.mango_key}:{client.mango_salt}")),
        ),
        # Never called here: the sweep only records events for accounts that have a webhook.
        webhook_url="https://crm.beta.example/calltrack" if webhook else None,
        webhook_secret=SecretStr("beta-webhook-secret-0123456789") if webhook else None,
    )


@contextmanager
def tenants(make_settings: Callable[..., Settings], **extra: str) -> Iterator[tuple[str, Runtime]]:
    """Two clients in the registry, their numbers routed, and the ingestion service as its own process."""
    settings = make_settings(secret_keys=SECRET_KEY, accounts_cache_seconds=0, routing_cache_seconds=0)
    rt = Runtime(settings)
    rt.accounts.commit({A.id: account(A, A_COUNTER), B.id: account(B, B_COUNTER, webhook=True)})
    build_intake(rt).routing.add(
        [
            Route(A_NUMBER, A_COUNTER),
            Route(B_NUMBER, B_COUNTER),
            Route(DEPLOYMENT_NUMBER, DEPLOYMENT_COUNTER),
        ]
    )
    env = env_of(
        settings,
        CALLTRACK_SECRET_KEYS=SECRET_KEY,
        CALLTRACK_ACCOUNTS_CACHE_SECONDS="0",
        CALLTRACK_TWILIO_AUTH_TOKENS=orjson.dumps({OPERATOR_SID: OPERATOR_TOKEN}).decode(),
        CALLTRACK_IDENTIFIER_FIELDS=orjson.dumps(
            {"twilio": {"ClientId": "SipHeader_X-Client-Id"}, "mango": {"ClientId": "customer.client_id"}}
        ).decode(),
        **extra,
    )
    try:
        with ingest_process(env) as process:
            yield process.base_url, rt
    finally:
        rt.close()


def twilio(
    base: str, client: Client | None, to: str, call_sid: str, *, visitor: str = "1556018960123456789"
) -> httpx.Response:
    sid, token = (client.twilio_sid, client.twilio_token) if client else (OPERATOR_SID, OPERATOR_TOKEN)
    form = twilio_form(call_sid, AccountSid=sid, To=to, **{"SipHeader_X-Client-Id": visitor})
    url = f"{base}/twilio/voice"
    headers = {**FORM, "X-Twilio-Signature": twilio_signature(token, url, form.items())}
    return httpx.post(url, content=urlencode(form), headers=headers, timeout=30)


def zadarma(base: str, client: Client, to: str, call_id: str) -> httpx.Response:
    form = zadarma_form(call_id, called_did=to.lstrip("+"), caller_id="79161234" + call_id[-3:].rjust(3, "0"))
    headers = {**FORM, "Signature": zadarma_sign(form, client.zadarma_secret)}
    return httpx.post(f"{base}/zadarma/{client.zadarma}", content=urlencode(form), headers=headers, timeout=30)


def mango(base: str, client: Client, to: str, entry_id: str, *, visitor: str | None = None) -> httpx.Response:
    summary = mango_summary(entry_id, line_number=to.lstrip("+"), customer={"client_id": visitor} if visitor else {})
    sign = mango_sign(client.mango_key, summary, client.mango_salt)
    body = urlencode({"vpbx_api_key": client.mango_key, "sign": sign, "json": summary})
    return httpx.post(f"{base}/mango/{client.mango}/events/summary", content=body, headers=FORM, timeout=30)


def rejected_metric(base: str, provider: str, reason: str) -> str:
    line = f'calltrack_calls_rejected_total{{provider="{provider}",reason="{reason}"}}'

    def counted() -> str | None:
        text = httpx.get(f"{base}/metrics", timeout=30).text
        return text if line in text else None

    return cast(str, wait_for(counted, timeout=15, what=f"{line} counted"))


def held_events(rt: Runtime) -> list[dict[str, Any]]:
    raw = cast(dict[str, str], rt.redis.hgetall(rt.keys.notify("outbox")))
    return [event for event in map(orjson.loads, raw.values()) if event["type"] == "call.held"]


def ctl(rt: Runtime, *args: str) -> tuple[int, str]:
    """Exit code and what it printed: only stdout with ``--json`` (the CLI logs to stderr)."""
    result = CliRunner().invoke(main, list(args), obj=Context(rt.settings), catch_exceptions=False)
    return result.exit_code, result.stdout if "--json" in args else result.output


def test_a_clients_signatures_cannot_write_into_another_clients_counter(
    make_settings: Callable[..., Settings],
) -> None:
    with tenants(make_settings) as (base, rt):
        before = snapshot(rt)
        attacks = {
            "twilio": twilio(base, A, B_NUMBER, "CA" + "1" * 32, visitor="666"),
            "zadarma": zadarma(base, A, B_NUMBER, "in_1715690231.1"),  # no visitor id: would be held on B
            "mango": mango(base, A, B_NUMBER, "bWFuZ28tYXR0YWNr"),  # no visitor id: held on B, B's webhook
            "twilio to the deployment's counter": twilio(base, A, DEPLOYMENT_NUMBER, "CA" + "2" * 32),
        }
        for name, answer in attacks.items():
            assert answer.status_code == 403, (name, answer.text)
            assert "does not belong to the client account of this credential" in answer.json()["error"], name
        sweep(rt)  # what the beat would do: a held call on B would become B's call.held event here
        assert snapshot(rt) == before  # nothing stored, held, buffered or recorded for a webhook
        assert held_calls(rt) == [] and stored_rows(rt) == [] and held_events(rt) == []
        for provider in ("twilio", "zadarma", "mango"):
            rejected_metric(base, provider, "foreign_number")

        # The same requests with the owner's own credentials, and the operator's, are taken: the
        # refusals above are about whose credential it is, nothing else.
        assert twilio(base, B, B_NUMBER, "CA" + "1" * 32).status_code == 200
        assert twilio(base, A, A_NUMBER, "CA" + "3" * 32).status_code == 200
        assert twilio(base, None, B_NUMBER, "CA" + "4" * 32).status_code == 200  # the deployment's own account
        assert twilio(base, None, DEPLOYMENT_NUMBER, "CA" + "5" * 32).status_code == 200
        assert zadarma(base, B, B_NUMBER, "in_1715690231.1").json()["status"] == "held"
        assert mango(base, B, B_NUMBER, "bWFuZ28tYXR0YWNr").json()["status"] == "held"
        counters = sorted(int(row["_bucket"].split(":")[0]) for row in stored_rows(rt))
        assert counters == [A_COUNTER, B_COUNTER, B_COUNTER, DEPLOYMENT_COUNTER]
        visitors = {row.get("ClientId") for row in stored_rows(rt)}
        assert "666" not in visitors  # the attacker's chosen visitor id never reached B's rows
        sweep(rt)  # B's own held calls do become B's events: the empty outbox above could have been otherwise
        assert sorted(e["data"]["provider"] for e in held_events(rt)) == ["mango", "zadarma"]


def test_a_webhook_rule_request_with_a_clients_account_sid_is_that_clients(
    make_settings: Callable[..., Settings],
) -> None:
    rule_key = "webhook-rule-shared-key-0123456789"
    keys = orjson.dumps({"calltrack-rule": rule_key}).decode()
    with tenants(make_settings, CALLTRACK_TWILIO_WEBHOOK_KEYS=keys) as (base, rt):

        def rule_signed(sid: str, to: str, call_sid: str) -> int:
            form = twilio_form(call_sid, AccountSid=sid, To=to, **{"SipHeader_X-Client-Id": "1556018960123456789"})
            url = f"{base}/twilio/voice"
            headers = {
                **FORM,
                "X-Twilio-Signature": twilio_signature(rule_key, url, form.items(), "HMAC_SHA256"),
                "X-Twilio-Webhooks-Signature-Settings": "key=calltrack-rule,algorithm=HMAC_SHA256",
            }
            return httpx.post(url, content=urlencode(form), headers=headers, timeout=30).status_code

        assert rule_signed(A.twilio_sid, B_NUMBER, "CA" + "e" * 32) == 403
        assert stored_rows(rt) == []
        assert rule_signed(A.twilio_sid, A_NUMBER, "CA" + "f" * 32) == 200
        assert rule_signed("AC" + "9" * 32, B_NUMBER, "CA" + "9" * 32) == 200  # no client's AccountSid: operator
        assert sorted(int(r["_bucket"].split(":")[0]) for r in stored_rows(rt)) == [A_COUNTER, B_COUNTER]


def test_unknown_numbers_are_held_for_their_client_and_replayed_only_to_its_counters(
    make_settings: Callable[..., Settings],
) -> None:
    with tenants(make_settings) as (base, rt):
        answer = mango(base, A, UNKNOWN_A, "YS11bmtub3du", visitor="4242")
        assert answer.status_code == 200 and answer.json() == {"status": "held", "reason": UNKNOWN_NUMBER}
        (entry,) = build_intake(rt).held.entries()
        assert entry.call.owner == A.id
        # The operator routes the number to B's counter by mistake: A's call is not replayed into it.
        assert ctl(rt, "routing", "add", UNKNOWN_A, str(B_COUNTER))[0] == 0
        sweep(rt)  # B has a webhook, and the number now routes to B: A's held call is still not B's event
        assert held_events(rt) == []
        code, out = ctl(rt, "held", "replay", "--all", "--json")
        assert code == 0, out
        (result,) = orjson.loads(out)["results"]
        assert result["status"] == "rejected" and result["errors"][0]["rule"] == "foreign_number"
        assert stored_rows(rt) == [] and len(held_calls(rt)) == 1
        # Moving the number to A's counter is a move across clients: refused without the flag.
        code, out = ctl(rt, "routing", "add", UNKNOWN_A, str(A_COUNTER))
        assert code != 0 and "account 'beta'" in out and "--across-accounts" in out, out
        assert build_intake(rt).routing.lookup([UNKNOWN_A])[UNKNOWN_A] == Route(UNKNOWN_A, B_COUNTER)
        assert ctl(rt, "routing", "add", UNKNOWN_A, str(A_COUNTER), "--across-accounts")[0] == 0
        code, out = ctl(rt, "held", "replay", "--all", "--json")
        assert orjson.loads(out)["results"][0]["status"] == "accepted", out
        (row,) = stored_rows(rt)
        assert row["_bucket"].startswith(f"{A_COUNTER}:") and row["ClientId"] == "4242"
        assert build_intake(rt).held.per_account() == {}


def test_routing_refuses_moving_a_number_across_clients(make_settings: Callable[..., Settings], tmp_path: Any) -> None:
    settings = make_settings(secret_keys=SECRET_KEY, routing_cache_seconds=0)
    rt = Runtime(settings)
    try:
        rt.accounts.commit({A.id: account(A, A_COUNTER), B.id: account(B, B_COUNTER)})
        routing = build_intake(rt).routing
        routing.add([Route(B_NUMBER, B_COUNTER), Route(DEPLOYMENT_NUMBER, DEPLOYMENT_COUNTER)])
        for number in (B_NUMBER, DEPLOYMENT_NUMBER):
            try:
                routing.add([Route(A_NUMBER, A_COUNTER), Route(number, A_COUNTER, "dynamic")])
            except RouteOwnerError as error:
                assert error.errors[0].field == "number" and error.errors[0].rule == "owner"
            else:
                raise AssertionError(f"{number} moved to another client's counter")
        assert routing.lookup([A_NUMBER, B_NUMBER]) == {A_NUMBER: None, B_NUMBER: Route(B_NUMBER, B_COUNTER)}
        assert rt.redis.exists(rt.keys.pool(A_COUNTER)) == 0  # all or nothing: no pool change either
        try:  # 2002 is in no account: still a move away from B
            routing.add([Route(B_NUMBER, 2002)])
        except RouteOwnerError as error:
            assert "the deployment (no client account)" in str(error)
        else:
            raise AssertionError("a number moved from a client to the deployment")
        csv = tmp_path / "numbers.csv"
        csv.write_text(f"number,counter_id\n{A_NUMBER},{A_COUNTER}\n{B_NUMBER},{A_COUNTER}\n")
        code, out = ctl(rt, "routing", "import", str(csv))
        assert code != 0 and "numbers.csv" in out and B_NUMBER in out, out
        assert ctl(rt, "routing", "import", str(csv), "--across-accounts")[0] == 0
        assert routing.lookup([B_NUMBER])[B_NUMBER] == Route(B_NUMBER, A_COUNTER)
        listed = {e["number"]: e["account"] for e in orjson.loads(ctl(rt, "routing", "list", "--json")[1])}
        assert listed == {A_NUMBER: A.id, B_NUMBER: A.id, DEPLOYMENT_NUMBER: None}
        # A call naming its counter outright is checked the same way.
        owners = CounterOwners(rt.redis, rt.keys, cache_seconds=0)
        owners.check(A.id, A_COUNTER)
        owners.check(None, B_COUNTER)  # an operator credential reaches every counter
        for counter in (B_COUNTER, DEPLOYMENT_COUNTER):
            try:
                owners.check(A.id, counter)
            except ForeignCallError as error:
                assert error.reason == FOREIGN_COUNTER and "counter_id" in str(error)
            else:
                raise AssertionError(f"acme's credential reached counter {counter}")
    finally:
        rt.close()


def test_held_calls_are_capped_per_client(make_settings: Callable[..., Settings]) -> None:
    with tenants(make_settings, CALLTRACK_HELD_MAX_CALLS_PER_ACCOUNT="2") as (base, rt):
        codes = [twilio(base, A, UNKNOWN_A, f"CA{n:032d}").status_code for n in range(4)]
        assert codes == [200, 200, 503, 503]
        refused = twilio(base, A, UNKNOWN_A, "CA" + "9" * 32)
        assert "CALLTRACK_HELD_MAX_CALLS_PER_ACCOUNT" in refused.json()["error"]
        # B's unknown number, and the operator's, are still held: A's full share refuses only A.
        assert twilio(base, B, UNKNOWN_B, "CA" + "b" * 32).status_code == 200  # TwiML: Twilio wants no JSON
        assert mango(base, B, UNKNOWN_B, "YmV0YS1oZWxk").json()["status"] == "held"
        for n in range(3):
            assert twilio(base, None, UNKNOWN_A, f"CA{n + 100:032d}").status_code == 200
        held = build_intake(rt).held
        assert held.per_account() == {A.id: 2, B.id: 2} and held.count() == 7
        rejected_metric(base, "twilio", "held_full_account")  # not the shared stream's held_full
        # Replaying A's calls frees A's share.
        assert ctl(rt, "routing", "add", UNKNOWN_A, str(A_COUNTER))[0] == 0
        code, out = ctl(rt, "held", "replay", "--all", "--json")
        assert code == 0, out
        assert held.per_account() == {B.id: 2}
        assert twilio(base, A, "+74959990003", "CA" + "d" * 32).status_code == 200
        assert held.per_account() == {A.id: 1, B.id: 2}


def test_a_client_api_keys_held_calls_count_against_its_client(make_settings: Callable[..., Settings]) -> None:
    """A client key (ingest/tenancy.py) sends calls to its own number without a visitor id: they are held
    as its client's, so its share fills up and refuses it (503) while the operator's token still holds."""
    operator = "operator-ingest-token-0123456789"
    extra = {"CALLTRACK_HELD_MAX_CALLS_PER_ACCOUNT": "2", "CALLTRACK_INGEST_API_TOKEN": operator}
    with tenants(make_settings, **extra) as (base, rt):
        key = ApiKeys(rt.redis, rt.keys).create(A.id, "ingest").key

        def post(token: str, call_id: str) -> httpx.Response:
            call = {"call_id": call_id, "to": A_NUMBER, "from": "+79160000001", "start": int(time.time()) - 60}
            return httpx.post(f"{base}/v1/calls", json=call, headers={"Authorization": f"Bearer {token}"}, timeout=30)

        assert [post(key, f"k-{n}").status_code for n in range(3)] == [200, 200, 503]
        assert post(key, "k-9").json()["error"].startswith("this client account's held calls are full")
        assert post(operator, "op-1").json() == {"status": "held", "reason": "no_identifier"}
        assert build_intake(rt).held.per_account() == {A.id: 2}
        rejected_metric(base, "generic", "held_full_account")


def test_held_entries_of_the_previous_release_stay_readable_and_uncounted(
    make_settings: Callable[..., Settings],
) -> None:
    rt = Runtime(make_settings(held_max_calls_per_account=1, secret_keys=SECRET_KEY))
    try:
        rt.accounts.commit({A.id: account(A, A_COUNTER)})
        intake = build_intake(rt)
        old = InboundCall("twilio", "CA-old", int(time.time()) - 60, True, UNKNOWN_A)
        # What hold.lua of before issue 22 wrote: no owner field.
        entry = rt.redis.xadd(rt.keys.held, {"reason": UNKNOWN_NUMBER, "call": old.to_json(), "at": "1"})
        new = InboundCall("twilio", "CA-new", int(time.time()) - 60, True, UNKNOWN_A, owner="acme")
        intake.held.hold([(new, UNKNOWN_NUMBER)])
        entries = {e.call.call_id: e for e in intake.held.entries()}
        assert entries["CA-old"].call.owner is None and entries["CA-new"].call.owner == "acme"
        assert intake.held.per_account() == {"acme": 1}
        intake.routing.add([Route(UNKNOWN_A, A_COUNTER)])  # no visitor id: both stay, their reason changed
        report = intake.replay(list(entries.values()))
        assert report.count("held") == 2
        assert intake.held.per_account() == {"acme": 1}  # rehold kept the owner and the count
        assert {e.call.owner for e in intake.held.entries()} == {None, "acme"}
        assert intake.held.release([e.entry_id for e in intake.held.entries()]) == 2
        assert intake.held.per_account() == {} and intake.held.count() == 0
        assert entry  # the old entry was one of them
    finally:
        rt.close()
