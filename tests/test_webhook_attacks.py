"""Webhooks cannot hurt anyone but their owner (issue 22): attacks by a client's own receiver, on loopback.

Real Redis, a real Celery worker where a delivery is the point, and receivers on 127.0.0.1 that count
what they served. The only target ever connected to is a loopback receiver the test allows with
``webhook_allowed_networks=127.0.0.1/32``; every other address is refused before any connection.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from config.settings import Settings
from emulator.config import Account as EmulatorAccount
from tests.accounts_helpers import account_settings, admin, ctl
from tests.conftest import REDIS_URL
from tests.helpers import make_call, unavailable, wait_for
from tests.pipeline import running_emulator, running_ingest, running_worker
from tests.webhook_helpers import drip, final_batches, huge, raw_receiver, status, tls_context
from worker import netguard
from worker.accounts.edits import create, update
from worker.app import queue_names
from worker.dataplane.keys import Keys
from worker.errors import AccountInputError, WebhookError, WebhookRefusedError
from worker.model.kinds import Bucket, IdType, UploadKind
from worker.notify import breaker, outbox, send
from worker.notify.outbox import Event
from worker.ops import scrape
from worker.runtime import Runtime

LOOPBACK_ONLY = ["127.0.0.1/32"]
PLAIN_SECRET = "plain-secret-0123456789"
REFUSED = [
    ("http://127.0.0.1:9/h", "loopback"),
    ("http://[::1]:9/h", "loopback"),
    ("http://10.1.2.3/h", "private"),
    ("http://172.16.0.1/h", "private"),
    ("http://172.31.255.254/h", "private"),
    ("http://192.168.1.1/h", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://100.64.0.1/h", "CGNAT"),
    ("http://224.0.0.1/h", "multicast"),
    ("http://0.0.0.0/h", "unspecified"),
    ("http://[fc00::1]/h", "unique-local"),
    ("http://[fd12:3456::1]/h", "unique-local"),
    ("http://[::ffff:127.0.0.1]/h", "loopback"),
    ("http://[::ffff:10.0.0.1]/h", "private"),
    ("http://[64:ff9b::a9fe:a9fe]/h", "link-local"),  # NAT64 of 169.254.169.254
    ("http://[2002:7f00:1::]/h", "loopback"),  # 6to4 of 127.0.0.1
    ("http://localhost:9/h", "loopback"),
    ("http://LOCALHOST./h", "loopback"),
]


REDIS_PORT = urlsplit(REDIS_URL).port or 6379
CONNECTS: list[tuple[str, int]] = []  # every TCP connect this process makes, seen by an audit hook


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and isinstance(args[1], tuple):
        CONNECTS.append((str(args[1][0]), int(args[1][1])))


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def connects() -> Iterator[list[tuple[str, int]]]:
    """The TCP connects of one test; afterwards every one of them must have gone to loopback (Redis, the
    receivers the test allowed, the ingestion service it started): no refused target was ever tried."""
    start = len(CONNECTS)
    yield CONNECTS
    made = CONNECTS[start:]
    assert all(ipaddress.ip_address(host.split("%")[0]).is_loopback for host, _ in made), made


def settings_for(make_settings: Callable[..., Settings], **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "secret_keys": base64.urlsafe_b64encode(b"k" * 32).decode(),
        "accounts_cache_seconds": 0,
        "webhook_allowed_networks": LOOPBACK_ONLY,
        "webhook_timeout": 2,
        "webhook_sweep_interval": 0.3,
        "webhook_backoff_max": 1,
        "webhook_max_retries": 0,
    }
    values.update(extra)
    return make_settings(**values)


def event(account: str, n: int) -> Event:
    return Event(f"test:{account}:{n}", "upload.final", account, int(time.time() * 1000), {"n": n})


def a_name_of_loopback() -> str | None:
    """This machine's own host name when it resolves to loopback only (as /etc/hosts usually says)."""
    name = socket.gethostname()
    try:
        netguard.resolve(f"http://{name}/", [])
    except netguard.TargetRefused as refused:
        return name if "loopback" in str(refused) else None
    except OSError:
        return None
    return None


# --- the SSRF guard ------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "rule"), REFUSED)
def test_refused_when_set_by_ctl_and_nothing_stored(
    make_settings: Callable[..., Settings], url: str, rule: str
) -> None:
    settings = settings_for(make_settings, webhook_allowed_networks=[])
    rt = Runtime(settings)
    create(rt.accounts, {"id": "acme"})
    code, out = ctl(settings, "accounts", "update", "acme", "--webhook-url", url, "--webhook-secret-stdin",
                    stdin=PLAIN_SECRET)  # fmt: skip
    assert code != 0 and "webhook_url" in out and rule in out and PLAIN_SECRET not in out, out
    account = rt.accounts.get("acme")
    assert account is not None and account.webhook_url is None
    rt.close()


def test_refused_when_set_by_a_name_resolving_to_loopback(make_settings: Callable[..., Settings]) -> None:
    name = a_name_of_loopback()
    if name is None:
        unavailable("this machine's host name does not resolve to loopback")  # localhost is tested above
    rt = Runtime(settings_for(make_settings, webhook_allowed_networks=[]))
    with pytest.raises(AccountInputError) as refused:
        create(rt.accounts, {"id": "acme", "webhook_url": f"https://{name}/h", "webhook_secret": PLAIN_SECRET})
    assert refused.value.field == "webhook_url" and "resolves to 127." in refused.value.rule
    assert rt.accounts.get("acme") is None
    # Stored while allowed, used while not: refused at delivery by what the name resolves to.
    lenient = Runtime(settings_for(make_settings, webhook_allowed_networks=["0.0.0.0/0", "::/0"]))
    create(lenient.accounts, {"id": "acme", "webhook_url": f"https://{name}/h", "webhook_secret": PLAIN_SECRET})
    lenient.close()
    assert outbox.record(rt, event("acme", 1))
    with pytest.raises(WebhookRefusedError, match="resolves to 127"):
        send.deliver(rt, "test:acme:1")
    rt.close()


def test_refused_when_set_by_the_admin_api(make_settings: Callable[..., Settings], emulator: Any) -> None:
    settings = account_settings(make_settings, emulator, accounts_cache_seconds=0)
    with running_ingest(settings) as ingest:
        assert admin(ingest, "POST", "/accounts", {"id": "acme"}).status_code == 201
        for url, rule in (("http://169.254.169.254/", "link-local"), ("http://localhost/h", "loopback")):
            bad = admin(ingest, "PATCH", "/accounts/acme", {"webhook_url": url, "webhook_secret": PLAIN_SECRET})
            assert bad.status_code == 422, bad.text
            error = bad.json()["errors"][0]
            assert error["field"] == "webhook_url" and rule in bad.text and PLAIN_SECRET not in bad.text
        assert admin(ingest, "GET", "/accounts/acme").json()["webhook"] is None


@pytest.mark.parametrize(("url", "rule"), REFUSED)
def test_refused_when_used_without_a_connection(
    make_settings: Callable[..., Settings], url: str, rule: str, connects: list[Any]
) -> None:
    """Stored while allowed, delivered while not (a narrowed allow-list): the delivery fails with the rule,
    and the only socket the delivery opened was to Redis."""
    lenient = Runtime(settings_for(make_settings, webhook_allowed_networks=["0.0.0.0/0", "::/0"]))
    create(lenient.accounts, {"id": "acme", "webhook_url": url, "webhook_secret": PLAIN_SECRET})
    lenient.close()
    rt = Runtime(settings_for(make_settings, webhook_allowed_networks=[]))
    assert outbox.record(rt, event("acme", 1))
    before = len(connects)
    with pytest.raises(WebhookRefusedError) as refused:
        send.deliver(rt, "test:acme:1")
    assert rule in str(refused.value) and url not in str(refused.value) and PLAIN_SECRET not in str(refused.value)
    assert all(port == REDIS_PORT for _, port in connects[before:]), connects[before:]
    rt.close()


def test_refused_at_delivery_is_a_dead_letter_at_once(
    make_settings: Callable[..., Settings], tmp_path: Path, connects: list[tuple[str, int]]
) -> None:
    with raw_receiver(status(204)) as (served, url):
        settings = settings_for(make_settings, webhook_max_retries=5)
        rt = Runtime(settings)
        create(rt.accounts, {"id": "acme", "webhook_url": url, "webhook_secret": PLAIN_SECRET})
        narrowed = settings_for(make_settings, webhook_max_retries=5, webhook_allowed_networks=[])
        with running_worker(narrowed, tmp_path):
            assert outbox.record(rt, event("acme", 1))
            wait_for(lambda: outbox.dead_letters(rt), timeout=30, what="a dead letter")
        (letter,) = outbox.dead_letters(rt)
        assert letter["attempts"] == 1 and "is refused" in letter["error"] and "loopback" in letter["error"]
        assert served.connections == 0  # the receiver was never connected to
        assert not [c for c in connects if c[1] == urlsplit(url).port]
        code, out = ctl(narrowed, "notify", "dead")
        assert code == 0 and "loopback" in out
        rt.close()


# --- one deadline, a cap on the answer -----------------------------------------------------------


def test_a_dripping_receiver_is_cut_at_the_deadline(
    make_settings: Callable[..., Settings], tmp_path: Path, connects: list[tuple[str, int]]
) -> None:
    answer_bytes = 40 + 200  # status line and header, then the body
    with raw_receiver(drip(every=0.25, total=200)) as (served, url):
        settings = settings_for(make_settings, webhook_timeout=1)
        rt = Runtime(settings)
        create(rt.accounts, {"id": "acme", "webhook_url": url, "webhook_secret": PLAIN_SECRET})
        with running_worker(settings, tmp_path):
            assert outbox.record(rt, event("acme", 1))
            wait_for(lambda: outbox.dead_letters(rt), timeout=60, what="the delivery to fail")
        (letter,) = outbox.dead_letters(rt)
        assert "deadline" in letter["error"], letter
        assert ("127.0.0.1", urlsplit(url).port) in connects  # the audit hook sees the worker's connects
        assert served.connections == 1 and 0 < served.sent < answer_bytes // 4, served.sent
        rt.close()


def test_a_huge_answer_is_read_up_to_the_cap(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    total = 400 * 1024 * 1024
    with raw_receiver(huge(total)) as (served, url):
        settings = settings_for(make_settings, webhook_max_response_bytes=64 * 1024, webhook_timeout=10)
        rt = Runtime(settings)
        create(rt.accounts, {"id": "acme", "webhook_url": url, "webhook_secret": PLAIN_SECRET})
        with running_worker(settings, tmp_path):
            assert outbox.record(rt, event("acme", 1))
            wait_for(lambda: outbox.counts(rt)["delivered"] == 1, timeout=60, what="the delivery")
            wait_for(lambda: served.sent and served.requests, timeout=10, what="the receiver to stop")
            time.sleep(0.5)
        # What the receiver got into the socket: the cap, plus what the kernel buffers on both sides hold.
        assert served.sent < 64 * 1024 + 16 * 1024 * 1024, served.sent
        assert served.connections == 1
        rt.close()


# --- the circuit breaker -------------------------------------------------------------------------


def test_a_dead_receiver_opens_its_breaker_and_others_still_deliver(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with raw_receiver(status(503)) as (dead, dead_url), raw_receiver(status(204)) as (alive, alive_url):
        settings = settings_for(make_settings, webhook_breaker_failures=3, webhook_breaker_seconds=600,
                                webhook_max_retries=10)  # fmt: skip
        rt = Runtime(settings)
        create(rt.accounts, {"id": "acme", "webhook_url": dead_url, "webhook_secret": PLAIN_SECRET})
        create(rt.accounts, {"id": "beta", "webhook_url": alive_url, "webhook_secret": PLAIN_SECRET})
        for n in range(20):
            outbox.record(rt, event("acme", n))
        with running_worker(settings, tmp_path, concurrency=2):
            wait_for(lambda: breaker.states(rt).get("acme", {}).get("state") == "open", timeout=30, what="open")
            for n in range(10):
                outbox.record(rt, event("beta", n))
            wait_for(lambda: outbox.counts(rt)["delivered"] == 10, timeout=30, what="beta's deliveries")
            time.sleep(1)  # more sweeps: acme's events stay paused
        assert len(alive.requests) == 10
        # Three failures open it; a delivery already running may add one per worker thread, never 20.
        assert 3 <= dead.connections <= 5, dead.connections
        assert outbox.counts(rt)["waiting"] == 20 and outbox.dead_letters(rt) == []
        code, out = ctl(settings, "notify", "breakers", "--json")
        assert code == 0 and orjson.loads(out)["breakers"]["acme"]["state"] == "open"
        rt.metrics.flush()
        shown = scrape.render(scrape.registry(rt.redis, rt.keys)).decode()
        assert "calltrack_webhook_breakers_open 1.0" in shown
        assert 'calltrack_webhook_deliveries_total{result="delivered"} 10.0' in shown
        assert "calltrack_webhook_breaker_opened_total" in shown
        code, out = ctl(settings, "notify", "reset", "acme")
        assert code == 0 and "20 waiting event(s) of acme are due now" in out
        assert "acme" not in breaker.states(rt)
        assert len(outbox.due(rt, resend_after=60)) == 20
        rt.close()


# --- Standard Webhooks signatures ----------------------------------------------------------------


def test_signed_as_standard_webhooks_and_during_a_rotation(make_settings: Callable[..., Settings]) -> None:
    first = "whsec_" + base64.b64encode(b"first-key-" + b"1" * 22).decode()
    second = "whsec_" + base64.b64encode(b"second-key" + b"2" * 22).decode()
    with raw_receiver(status(204)) as (served, url):
        rt = Runtime(settings_for(make_settings))
        create(rt.accounts, {"id": "acme", "webhook_url": url, "webhook_secret": PLAIN_SECRET})
        outbox.record(rt, event("acme", 1))
        assert send.deliver(rt, "test:acme:1") == "delivered"
        update(rt.accounts, "acme", {"webhook_secret": first})
        outbox.record(rt, event("acme", 2))
        assert send.deliver(rt, "test:acme:2") == "delivered"
        update(rt.accounts, "acme", {"webhook_secret": second})
        outbox.record(rt, event("acme", 3))
        assert send.deliver(rt, "test:acme:3") == "delivered"
        shown = rt.accounts.get("acme")
        assert shown is not None and "previous_secret_signs_until" in shown.public()["webhook"]
        rt.close()
    requests: list[tuple[dict[str, str], bytes]] = []
    for raw in served.requests:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")[1:]
        requests.append(({k.strip(): v.strip() for k, v in (x.split(":", 1) for x in lines)}, body))
    (h1, b1), (h2, b2), (h3, b3) = requests
    # A plain secret (before whsec_): its UTF-8 bytes are the key.
    assert Webhook(PLAIN_SECRET.encode()).verify(b1, h1)["id"] == "test:acme:1"
    assert Webhook("whsec_" + base64.b64encode(PLAIN_SECRET.encode()).decode()).verify(b1, h1)
    # Rotated from the plain secret to the first whsec_ one: both verify.
    assert len(h2["webhook-signature"].split(" ")) == 2
    assert Webhook(first).verify(b2, h2)["id"] == "test:acme:2"
    assert Webhook(PLAIN_SECRET.encode()).verify(b2, h2)
    # Rotated again: the newest and the one before verify (the oldest no longer signs).
    assert Webhook(second).verify(b3, h3) and Webhook(first).verify(b3, h3)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(PLAIN_SECRET.encode()).verify(b3, h3)
    assert h3["webhook-id"] == "test:acme:3" and "X-Calltrack-Signature" in h3  # the old headers, one release


# --- the outbox sweep ----------------------------------------------------------------------------


def test_the_sweep_records_every_batch_of_one_minute_beyond_its_page(make_settings: Callable[..., Settings]) -> None:
    with raw_receiver(status(204)) as (_, url):
        rt = Runtime(settings_for(make_settings, shards=1))
        create(rt.accounts, {"id": "acme", "webhook_url": url, "webhook_secret": PLAIN_SECRET,
                             "counters": [{"id": 1001}]})  # fmt: skip
        keys: Keys = rt.keys
        now = int(time.time() * 1000)
        start = now - 10 * 60_000
        # The cursor as the release before wrote it (plain ms), just before a minute of 5,001 final batches.
        rt.redis.hset(keys.notify("cursor"), "done:0", start)
        bucket = Bucket(1001, UploadKind.CALLS, IdType.CLIENT_ID).encode()
        pipe = rt.redis.pipeline(transaction=False)
        count = outbox.SWEEP_LIMIT + 1
        for n in range(count):
            batch = f"CTk3S0B{n}Rtest"
            pipe.hset(keys.batch(batch), mapping={"bucket": bucket, "state": "PROCESSED", "rows": 1})
            pipe.zadd(keys.done(0), {batch: start + 1 + (n % 7) * 1000})  # many share a time
        pipe.execute()
        recorded = 0
        for _ in range(5):
            recorded += outbox.sweep(rt)
        assert recorded == count
        assert outbox.counts(rt)["waiting"] == count
        rt.close()


# --- their own worker pool -----------------------------------------------------------------------


def test_the_main_pool_never_takes_a_delivery(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    for queues in ("main", "notify", "all"):
        settings = settings_for(make_settings, worker_queues=queues)
        periodic, upload, notify = queue_names(settings)
        expected = {"main": {periodic, upload}, "notify": {notify}, "all": {periodic, upload, notify}}[queues]
        with running_worker(settings, tmp_path, beat=False) as app:
            assert set(app.amqp.queues.consume_from) == expected, queues
            limits = app.conf.task_annotations["calltrack.notify_webhook"]
            assert 0 < limits["soft_time_limit"] < limits["time_limit"] == settings.webhook_task_time_limit


# --- TLS to the checked address ------------------------------------------------------------------


def test_https_goes_to_the_checked_address_with_the_name_for_sni_and_certificate(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection goes to the resolved, checked address; the URL's name is still the TLS server name
    and the name the certificate must carry (a certificate for another name is refused)."""
    seen: list[str] = []
    right, ca = tls_context("localhost", tmp_path, seen)
    wrong, other_ca = tls_context("other.example", tmp_path, [])
    settings = settings_for(make_settings, webhook_allowed_networks=["127.0.0.1/32", "::1/128"])
    for context, trusted, outcome in ((right, ca, "delivered"), (wrong, other_ca, "refused")):
        with raw_receiver(status(204), tls=context) as (served, url):
            monkeypatch.setenv("SSL_CERT_FILE", str(trusted))
            rt = Runtime(settings)
            port = url.split(":")[2].split("/")[0]
            create(rt.accounts, {"id": "acme", "webhook_url": f"https://localhost:{port}/hook",
                                 "webhook_secret": PLAIN_SECRET})  # fmt: skip
            outbox.record(rt, event("acme", 1))
            if outcome == "delivered":
                assert send.deliver(rt, "test:acme:1") == "delivered"
                assert seen == ["localhost"]
                assert b"\r\nHost: localhost:" + port.encode() + b"\r\n" in served.requests[0]
            else:
                with pytest.raises(WebhookError, match="not reached"):
                    send.deliver(rt, "test:acme:1")
                assert served.requests == []
            rt.redis.delete(*rt.redis.keys(f"{settings.namespace}:*"))
            rt.close()


def test_a_key_ring_rotation_keeps_both_webhook_secrets(make_settings: Callable[..., Settings]) -> None:
    """``ctl accounts rekey`` re-encrypts the previous secret of a rotation too: after the old key is gone,
    both secrets still sign."""
    old_key, new_key = (base64.urlsafe_b64encode(bytes([n]) * 32).decode() for n in (1, 2))
    rt = Runtime(settings_for(make_settings, secret_keys=old_key))
    create(rt.accounts, {"id": "acme", "webhook_url": "https://hooks.example/h", "webhook_secret": PLAIN_SECRET})
    update(rt.accounts, "acme", {"webhook_secret": "another-secret-0123456789"})
    rt.close()
    assert ctl(settings_for(make_settings, secret_keys=f"{new_key},{old_key}"), "accounts", "rekey")[0] == 0
    rt = Runtime(settings_for(make_settings, secret_keys=new_key))
    account = rt.accounts.get("acme")
    assert account is not None
    signing = [s.get_secret_value() for s in account.webhook_secrets(time.time())]
    assert signing == ["another-secret-0123456789", PLAIN_SECRET]
    rt.close()


def test_a_dripping_receiver_never_holds_another_clients_uploads(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Issue 22's measurement: acme's receiver drips a byte at a time while beta's 12 calls upload. The main
    pool (CALLTRACK_WORKER_QUEUES=main) never takes acme's deliveries nor the sweep (both ride
    calltrack.notify), so beta's calls reach Metrica with acme's events still queued; the webhook pool
    then takes them and cuts each at the deadline."""
    acme_token, beta_token = "AQAAAAAacmeSeedToken000000000000001", "AQAAAAAbetaSeedToken000000000000002"
    accounts = (EmulatorAccount(acme_token, "acme"), EmulatorAccount(beta_token, "beta"))
    with (
        running_emulator(step_seconds=0.1, accounts=accounts) as emulator,
        raw_receiver(drip(0.5, 200)) as (
            served,
            url,
        ),
    ):
        common = {"webhook_allowed_networks": LOOPBACK_ONLY, "webhook_sweep_interval": 0.3, "webhook_timeout": 1,
                  "webhook_max_retries": 0, "flush_max_rows": 4, "routing_cache_seconds": 0}  # fmt: skip
        main = account_settings(make_settings, emulator, worker_queues="main", **common)
        rt = Runtime(main)
        create(rt.accounts, {"id": "acme", "tokens": [{"token": acme_token}], "counters": [{"id": 1001}],
                             "webhook_url": url, "webhook_secret": PLAIN_SECRET})  # fmt: skip
        create(rt.accounts, {"id": "beta", "tokens": [{"token": beta_token}], "counters": [{"id": 2002}]})
        with running_worker(main, tmp_path):
            assert len(rt.producer.submit([make_call(1001, n) for n in range(8)]).accepted) == 8
            # The sweep rides the notify pool's queue: record acme's events as its run would.
            wait_for(
                lambda: outbox.sweep(rt) >= 0 and outbox.counts(rt)["waiting"] >= 2, timeout=60, what="acme's events"
            )
            assert len(rt.producer.submit([make_call(2002, n) for n in range(12)]).accepted) == 12
            wait_for(lambda: len(final_batches(rt, 2002)) == 3, timeout=60, what="beta's 12 calls in Metrica")
        assert served.connections == 0 and outbox.counts(rt)["waiting"] >= 2  # acme's events wait for their pool
        notify = account_settings(make_settings, emulator, worker_queues="notify", **common)
        with running_worker(notify, tmp_path, beat=False):
            notify_webhook_sweep(rt)
            wait_for(lambda: len(outbox.dead_letters(rt)) >= 2, timeout=60, what="acme's deliveries cut")
        assert all("deadline" in letter["error"] for letter in outbox.dead_letters(rt))
        assert served.sent < served.connections * 20  # a byte every 0.5 s within a 1 s deadline, not 240 each
        rt.close()


def notify_webhook_sweep(rt: Runtime) -> None:
    """What the beat does: send every due event (the notify pool has no beat of its own)."""
    from tasks.notify import notify_webhook

    for event_id in outbox.due(rt, resend_after=3600):
        notify_webhook.apply_async((event_id,))
