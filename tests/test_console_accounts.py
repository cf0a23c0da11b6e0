"""The console's health and client columns, the client page and paged held calls, over real HTTP with a
logged-in session (issue 25 item 7): real Redis, the emulator's user info (it refuses an unknown token),
the ingestion service holding calls it cannot attribute. No secret reaches a page."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from config.settings import Settings
from emulator.server import RunningEmulator
from tests.accounts_helpers import account_settings, ctl
from tests.edge_helpers import console_login
from tests.ingest_helpers import recent
from tests.pipeline import running_ingest
from worker.accounts.apikeys import ApiKeys
from worker.runtime import Runtime

PASSWORD = "console-password-0123456789"
BAD = "AQAAAAAbadUnknownToken0000000000009"
TELEPHONY_SECRET = "zadarma-secret-0123456789abcdef"


def _rows(html: str, table: str) -> list[str]:
    body = html.split(f'<table id="{table}">', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr[ >].*?</tr>", body, flags=re.S)[1:]  # without the header row


def test_health_and_client_columns_client_page_and_paged_held_calls(
    emulator: RunningEmulator, make_settings: Callable[..., Settings]
) -> None:
    emulator.admin.reset()
    settings = account_settings(make_settings, emulator, console_password=PASSWORD, routing_cache_seconds=0)
    code, out = ctl(settings, "accounts", "add", "acme", "--counter", "101", "--token-stdin", stdin=BAD + "\n")
    assert code == 1, out
    code, out = ctl(
        settings, "accounts", "telephony", "acme", "zadarma", "z1", "--secret-stdin", stdin=TELEPHONY_SECRET + "\n"
    )
    assert code == 0, out
    rt = Runtime(settings)
    try:
        key = ApiKeys(rt.redis, rt.keys).create("acme", "status", name="crm")
        rt.redis.hset(rt.keys.routing, "+74951110001", '{"counter_id": 101, "kind": "static"}')
        with running_ingest(settings) as base, httpx.Client(base_url=base) as client:
            for n in range(60):
                held = client.post("/v1/calls", json={"call_id": f"held-{n}", "to": "+74951110001", "start": recent()})
                assert held.json()["status"] == "held", held.text
            assert client.get("/console/accounts/acme").status_code == 303  # a login first
            console_login(client, PASSWORD)

            counters = client.get("/console/counters").text
            (row,) = [r for r in _rows(counters, "counters") if 'data-counter="101"' in r]
            assert 'href="/console/accounts/acme"' in row
            health = row.split('class="health', 1)[1]
            assert "token refused" in health and "held calls" in health

            page = client.get("/console/accounts/acme")
            assert page.status_code == 200
            html = page.text
            (mine,) = _rows(html, "counters")
            assert "101" in mine and "token refused" in mine
            (token,) = _rows(html, "tokens")
            assert 'data-state="refused"' in token and "main" in token
            assert "zadarma" in html and "z1" in html
            assert key.record.prefix in html and "crm" in html
            assert ">60<" in html.split('id="figures"', 1)[1]  # the held calls of its counters
            for secret in (BAD, TELEPHONY_SECRET, key.key, settings.secret_keys[0].get_secret_value()):
                assert secret not in html and secret not in counters
            assert client.get("/console/accounts/nobody").status_code == 404

            first = client.get("/console/counters/101").text
            assert "Held calls (60)" in first and len(_rows(first, "held")) == 50
            second = client.get("/console/counters/101?held_page=2").text
            assert len(_rows(second, "held")) == 10
            assert set(_rows(first, "held")).isdisjoint(_rows(second, "held"))
    finally:
        rt.close()
