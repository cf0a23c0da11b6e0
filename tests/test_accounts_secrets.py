"""No secret of the account registry leaks: a full run (CLI, admin API, a signed provider webhook checked
with the registry's secret, uploads, a rotation, reports) and then every Redis key and value, every log
event, every task message, every CLI output and every admin answer is searched for every secret."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import signals

from config.logging import configure_logging
from config.settings import Settings
from emulator.config import Account
from standalone.feed import ZADARMA_SECRET, Feeder
from tests.accounts_helpers import ADMIN_TOKEN, SECRET_KEY, account_settings, admin
from tests.accounts_helpers import ctl as run_ctl
from tests.helpers import make_call, redis_contents, wait_for
from tests.pipeline import running_emulator, running_ingest, running_worker
from worker.intake.routing import Route
from worker.intake.service import build_intake
from worker.runtime import Runtime

ACME = "AQAAAAAacmeSecretToken0000000000000077"
BETA = "AQAAAAAbetaSecretToken0000000000000088"


def test_no_secret_of_a_full_run_appears_anywhere(
    make_settings: Callable[..., Settings], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    published: list[str] = []

    def ctl(settings: Settings, *args: str, stdin: str | None = None) -> tuple[int, str]:
        try:
            return run_ctl(settings, *args, stdin=stdin)
        finally:
            configure_logging(settings)  # the CLI logs to its (captured) console; the worker's JSON logs resume

    def on_publish(body: Any = None, headers: Any = None, **_: Any) -> None:
        published.append(repr((body, headers)))

    signals.before_task_publish.connect(on_publish, weak=False)
    outputs: list[str] = []
    try:
        with running_emulator(step_seconds=0.1, accounts=(Account(ACME, "acme"), Account(BETA, "beta"))) as emulator:
            issued = emulator.admin.issue_token("acme", refresh=True, client_id="emulator-client")
            rotated, refresh = issued["access_token"], issued["refresh_token"]
            settings = account_settings(make_settings, emulator)
            rt = Runtime(settings)
            build_intake(rt).routing.add([Route("+74950000202", 202, "dynamic")])
            with running_worker(settings, tmp_path), running_ingest(settings) as ingest:
                outputs.append(
                    ctl(settings, "accounts", "add", "acme", "--counter", "101", "--token-stdin", stdin=ACME)[1]
                )
                beta = {
                    "id": "beta",
                    "tokens": [{"token": BETA}],
                    "counters": [{"id": 202}],
                    "telephony": [{"provider": "zadarma", "account": "demo", "secret": ZADARMA_SECRET,
                                   "timezone": "Asia/Yekaterinburg"}],
                }  # fmt: skip
                outputs.append(admin(ingest, "PUT", "/accounts/beta", beta).text)
                Runtime(settings).producer.submit([make_call(101, n) for n in range(5)])
                with httpx.Client(base_url=ingest, timeout=30) as http:
                    feeder = Feeder.__new__(Feeder)
                    feeder.http, feeder.zone = http, __import__("zoneinfo").ZoneInfo("Asia/Yekaterinburg")
                    # Zadarma signs no visitor id: the number's lease (session API) names the visitor.
                    lease = http.get("/v1/number", params={"counter": 202, "ClientId": "1556018960123456"})
                    assert lease.json()["number"] == "+74950000202", lease.text
                    time.sleep(1.1)
                    started = int(time.time())
                    answer = feeder.zadarma_call("z-1", to="+74950000202", caller="+79120000001", started=started)
                    assert answer.status_code == 200, answer.text
                wait_for(lambda: len(emulator.admin.rows(counter=202)) == 1, timeout=60, what="the webhook's call")
                # call_start was read in the Zadarma account's own zone (Yekaterinburg), not the global default
                assert emulator.admin.rows(counter=202)[0]["DateTime"] == str(started)
                wait_for(lambda: len(emulator.admin.rows(counter=101)) == 5, timeout=60, what="acme's calls")
                stdin = f"{rotated}\n{refresh}\n"
                outputs.append(ctl(settings, "accounts", "update", "acme", "--token-stdin", stdin=stdin)[1])
                Runtime(settings).producer.submit([make_call(101, n) for n in range(100, 105)])
                wait_for(lambda: len(emulator.admin.rows(counter=101)) == 10, timeout=60, what="calls after rotation")
                for args in (
                    ("accounts", "list"), ("accounts", "list", "--json"), ("accounts", "show", "acme", "--json"),
                    ("accounts", "show", "beta"), ("counters", "list", "--json"), ("status", "--json"), ("doctor",),
                    ("accounts", "add", "bad", "--token-stdin"),
                ):  # fmt: skip
                    outputs.append(ctl(settings, *args, stdin=f"{ACME} x" if args[-1] == "--token-stdin" else None)[1])
                for path in ("/accounts", "/accounts/acme", "/counters", "/problems"):
                    outputs.append(admin(ingest, "GET", path).text)
                outputs.append(
                    admin(ingest, "PUT", "/accounts/bad", {"id": "bad", "tokens": [{"token": f"{BETA} x"}]}).text
                )
                outputs.append(httpx.get(f"{ingest}/metrics", timeout=30).text)
            dump = [redis_contents(settings.redis_url, settings.namespace)]  # every key and value, by type
            rt.close()
    finally:
        signals.before_task_publish.disconnect(on_publish)

    # The CLI reconfigures logging (console), so the process's own log output is searched too.
    captured = capfd.readouterr()
    logs = captured.err + captured.out
    assert "batch_uploaded" in logs and "token_login_unknown" not in logs
    assert published and len(outputs) > 10
    places = {
        "redis": "\n".join(dump),
        "logs": logs,
        "task messages": "\n".join(published),
        "cli and admin output": "\n".join(outputs),
    }
    secrets = {
        "acme token": ACME,
        "beta token": BETA,
        "rotated token": rotated,
        "refresh token": refresh,
        "zadarma secret": ZADARMA_SECRET,
        "key ring": SECRET_KEY,
        "admin bearer": ADMIN_TOKEN,
    }
    leaks = [
        f"{name} in {place}" for name, secret in secrets.items() for place, text in places.items() if secret in text
    ]
    assert leaks == []
