"""Webhooks on real parts: a receiver over HTTP on 127.0.0.1, Redis, a Celery worker and beat, the emulator.

Each final status reaches the account's receiver once, signed; a receiver that answers 503 for a while
still gets every notification afterwards; one that never answers leaves dead letters a retry sends.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
from standardwebhooks.webhooks import Webhook

from config.settings import Settings
from emulator.config import Account
from tests.accounts_helpers import account_settings, admin, ctl
from tests.helpers import make_call, wait_for
from tests.ingest_helpers import recent
from tests.pipeline import running_emulator, running_ingest, running_worker
from tests.webhook_helpers import final_batches
from worker.notify import outbox
from worker.runtime import Runtime

ACME = "AQAAAAAacmeSeedToken000000000000001"
SECRET = "whsec-0123456789abcdef-secret"


class Receiver:
    """A webhook receiver: records each request; answers 503 while ``failing`` says so."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.refused = 0
        self.failing: Callable[[], bool] = lambda: False
        self.lock = threading.Lock()

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [r["body"] for r in self.received if kind is None or r["body"]["type"] == kind]


@contextmanager
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                fail = state.failing()
                if fail:
                    state.refused += 1
                else:
                    state.received.append({"headers": dict(self.headers), "raw": body, "body": orjson.loads(body)})
            self.send_response(503 if fail else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def hook_settings(make_settings: Callable[..., Settings], emulator: Any, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_sweep_interval": 0.3,
        "webhook_backoff_max": 1,
        "webhook_timeout": 2,
        "flush_max_rows": 5,
        "routing_cache_seconds": 0,
        # The receivers here listen on loopback, which webhooks may not reach unless allowed (SSRF guard).
        "webhook_allowed_networks": ["127.0.0.1/32"],
        "webhook_breaker_seconds": 1,  # a receiver that failed for a while is probed again soon
    }
    values.update(extra)
    return account_settings(make_settings, emulator, **values)


def add_account(settings: Settings, url: str) -> None:
    code, out = ctl(settings, "accounts", "add", "acme", "--counter", "1001", "--token-stdin", stdin=ACME + "\n")
    assert code == 0, out
    code, out = ctl(
        settings, "accounts", "update", "acme", "--webhook-url", url, "--webhook-secret-stdin", stdin=SECRET
    )
    assert code == 0, out
    code, out = ctl(settings, "accounts", "list", "--json")
    assert SECRET not in out and orjson.loads(out)["accounts"][0]["webhook"] == {"url": url, "has_secret": True}


def test_each_final_status_once_signed_and_held_calls(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with running_emulator(step_seconds=0.1, accounts=(Account(ACME, "acme"),)) as emulator, receiver() as (got, url):
        settings = hook_settings(make_settings, emulator)
        rt = Runtime(settings)
        add_account(settings, url)
        assert ctl(settings, "routing", "add", "+74951110001", "1001", "--kind", "static")[0] == 0
        with running_worker(settings, tmp_path), running_ingest(settings) as ingest:
            assert len(rt.producer.submit([make_call(1001, n) for n in range(12)]).accepted) == 12
            held = {"call_id": "held-1", "to": "+74951110001", "start": recent()}
            assert httpx.post(f"{ingest}/v1/calls", json=held).json()["status"] == "held"
            wait_for(lambda: len(final_batches(rt, 1001)) == 3, timeout=60, what="three batches final")
            wait_for(lambda: len(got.events("upload.final")) >= 3 and got.events("call.held"), timeout=30,
                     what="the notifications")  # fmt: skip
            time.sleep(2)  # more sweeps: nothing is sent twice
        finals = got.events("upload.final")
        assert sorted(e["data"]["batch_id"] for e in finals) == sorted(final_batches(rt, 1001))
        assert len({e["id"] for e in finals}) == len(finals) == 3
        assert all(e["data"]["status"] == "PROCESSED" and e["account"] == "acme" for e in finals)
        assert sum(e["data"]["rows"] for e in finals) == 12
        (held_event,) = got.events("call.held")
        assert held_event["data"]["call_id"] == "held-1" and held_event["data"]["reason"] == "no_identifier"
        for request in got.received:
            headers = {k.lower(): v for k, v in request["headers"].items()}
            # Standard Webhooks: a plain (pre-whsec_) secret's UTF-8 bytes are the key.
            assert Webhook(SECRET.encode()).verify(request["raw"], headers)["id"] == headers["webhook-id"]
            # The headers before, deprecated but sent for one more release.
            expected = "sha256=" + hmac.new(SECRET.encode(), request["raw"], hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["x-calltrack-signature"], expected)
            assert headers["x-calltrack-event"] == request["body"]["id"]
            assert int(headers["x-calltrack-timestamp"]) == request["body"]["timestamp"]
            assert SECRET not in request["raw"].decode()


def test_a_failing_receiver_gets_every_notification_later(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with running_emulator(step_seconds=0.1, accounts=(Account(ACME, "acme"),)) as emulator, receiver() as (got, url):
        settings = hook_settings(make_settings, emulator, webhook_max_retries=30)
        rt = Runtime(settings)
        add_account(settings, url)
        until = time.monotonic() + 6
        got.failing = lambda: time.monotonic() < until
        with running_worker(settings, tmp_path):
            assert len(rt.producer.submit([make_call(1001, n) for n in range(15)]).accepted) == 15
            wait_for(lambda: len(final_batches(rt, 1001)) == 3, timeout=60, what="three batches final")
            wait_for(lambda: len(got.events("upload.final")) >= 3, timeout=60, what="every notification")
            time.sleep(2)
        assert got.refused > 0  # it did fail for a while
        finals = got.events("upload.final")
        assert sorted(e["data"]["batch_id"] for e in finals) == sorted(final_batches(rt, 1001))
        assert len({e["id"] for e in finals}) == len(finals)


def test_dead_letters_after_the_retries_and_a_retry_delivers(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with running_emulator(step_seconds=0.1, accounts=(Account(ACME, "acme"),)) as emulator, receiver() as (got, url):
        settings = hook_settings(make_settings, emulator, webhook_max_retries=1, flush_max_rows=100)
        rt = Runtime(settings)
        add_account(settings, url)
        got.failing = lambda: True
        with running_worker(settings, tmp_path):
            assert len(rt.producer.submit([make_call(1001, n) for n in range(3)]).accepted) == 3

            wait_for(lambda: len(outbox.dead_letters(rt)) == 1, timeout=60, what="a dead letter")
            letter = outbox.dead_letters(rt)[0]
            assert letter["attempts"] == 2 and "answered HTTP 503" in letter["error"] and url not in letter["error"]
            got.failing = lambda: False
            assert ctl(settings, "notify", "retry", "--all")[0] == 0
            wait_for(lambda: len(got.events("upload.final")) == 1, timeout=30, what="the retried notification")
        code, out = ctl(settings, "notify", "dead", "--json")  # the worker's logs are quiet now
        assert code == 0 and orjson.loads(out)["dead"] == [] and orjson.loads(out)["counts"]["delivered"] == 1


def test_webhook_by_admin_api_validated_and_never_shown(make_settings: Callable[..., Settings]) -> None:
    with running_emulator(accounts=(Account(ACME, "acme"),)) as emulator:
        settings = hook_settings(make_settings, emulator)
        with running_ingest(settings) as ingest:
            body = {"id": "acme", "tokens": [{"token": ACME}], "counters": [{"id": 1001}]}
            assert admin(ingest, "POST", "/accounts", body).status_code == 201
            bad = admin(ingest, "PATCH", "/accounts/acme", {"webhook_url": "ftp://x"})
            assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "webhook_url"
            no_secret = admin(ingest, "PATCH", "/accounts/acme", {"webhook_url": "https://crm.example/h"})
            assert no_secret.status_code == 422 and no_secret.json()["errors"][0]["field"] == "webhook_secret"
            short = admin(
                ingest, "PATCH", "/accounts/acme", {"webhook_url": "https://crm.example/h", "webhook_secret": "x"}
            )
            assert short.status_code == 422 and SECRET not in short.text
            ok = admin(
                ingest, "PATCH", "/accounts/acme", {"webhook_url": "https://crm.example/h", "webhook_secret": SECRET}
            )
            assert ok.status_code == 200, ok.text
            shown = admin(ingest, "GET", "/accounts/acme")
            assert shown.json()["webhook"] == {"url": "https://crm.example/h", "has_secret": True}
            assert SECRET not in shown.text
            # The secret is kept when other fields change, and is encrypted at rest.
            assert admin(ingest, "PATCH", "/accounts/acme", {"name": "Acme"}).status_code == 200
            rt = Runtime(settings)
            account = rt.accounts.get("acme")
            assert account is not None and account.webhook_secret is not None
            assert account.webhook_secret.get_secret_value() == SECRET
            assert SECRET not in str(rt.redis.hgetall(rt.keys.accounts))
            removed = admin(ingest, "PATCH", "/accounts/acme", {"webhook_url": None})
            assert removed.status_code == 200 and admin(ingest, "GET", "/accounts/acme").json()["webhook"] is None
