"""The console in headless Chromium, on real parts (Redis, a Celery worker and beat, the ingestion service,
the emulator): a login, a call found by its id, a quarantined batch replayed from its button; refused
without a login and with a forged CSRF token. Screenshots of the fleet and counter pages are saved
under the test's tmp dir and ``var/console-screenshots/`` (not committed) for a person to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import cast

import httpx

from config.settings import Settings
from tests.helpers import chromium, make_call, wait_for
from tests.ingest_helpers import recent
from tests.pipeline import running_emulator, running_ingest, running_worker
from worker.runtime import Runtime

PASSWORD = "console-password-0123456789"
SHOTS = Path(__file__).resolve().parent.parent / "var" / "console-screenshots"


def states(rt: Runtime, counter: int) -> dict[str, str]:
    found = {}
    for key in rt.redis.scan_iter(match=f"{rt.settings.namespace}:*:batch:*", count=1000):
        record = cast(dict[str, str], rt.redis.hgetall(key))
        if record.get("bucket", "").startswith(f"{counter}:"):
            found[key.rsplit(":", 1)[1]] = record["state"]
    return found


def test_console_login_lookup_replay_and_refusals(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with running_emulator(step_seconds=0.1) as emulator:
        settings = make_settings(
            metrica_base_url=emulator.base_url, console_password=PASSWORD, flush_max_rows=10, status_api_token=PASSWORD,
            upload_max_retries=1, routing_cache_seconds=0,
        )  # fmt: skip
        emulator.admin.script([400], kind="upload", counter=202)  # Metrica refuses 202's first file for good
        rt = Runtime(settings)
        rt.redis.hset(rt.keys.routing, "+74951110001", '{"counter_id": 101, "kind": "static"}')
        with running_worker(settings, tmp_path), running_ingest(settings) as base, sync_playwright() as pw:
            assert len(rt.producer.submit([make_call(101, n) for n in range(20)]).accepted) == 20
            assert len(rt.producer.submit([make_call(202, n) for n in range(5)]).accepted) == 5
            held = httpx.post(f"{base}/v1/calls", json={"call_id": "held-<b>1</b>", "to": "+74951110001",
                                                         "start": recent()})  # fmt: skip
            assert held.json()["status"] == "held", held.text
            wait_for(lambda: sorted(states(rt, 101).values()) == ["PROCESSED"] * 2
                     and list(states(rt, 202).values()) == ["QUARANTINED"], timeout=60,
                     what="101 processed, 202 quarantined")  # fmt: skip
            (quarantined,) = states(rt, 202)
            auth = {"Authorization": f"Bearer {PASSWORD}"}
            where = httpx.get(f"{base}/v1/calls/api/call-202-0", headers=auth).json()
            assert where["state"] == "QUARANTINED" and where["batch"]["batch_id"] == quarantined
            assert where["batch"]["reason"]  # Metrica's refusal, as recorded

            # Without a login: pages send the browser to the login form, actions are refused.
            refused = httpx.post(f"{base}/console/quarantine/{quarantined}/replay", data={"csrf": "x"})
            assert refused.status_code == 401 and states(rt, 202)[quarantined] == "QUARANTINED"
            browser = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
            context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
            page = context.new_page()
            page.goto(f"{base}/console/")
            assert page.url.startswith(f"{base}/console/login")
            page.fill("#user", "admin")
            page.fill("#password", "wrong")
            page.click("#submit")
            assert "Wrong user or password" in (page.text_content("#error") or "")

            page.fill("#user", "admin")
            page.fill("#password", PASSWORD)
            page.click("#submit")
            page.wait_for_selector("#throughput")
            cookie = next(c for c in context.cookies() if c["name"] == "calltrack_console")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
            assert int(page.text_content("#final-total") or 0) >= 20
            page.screenshot(path=str(tmp_path / "console-fleet.png"), full_page=True)

            # Find a call by its id.
            page.click("text=Find a call")
            page.fill("#provider", "api")
            page.fill("#call_id", "call-101-3")
            page.click("#find")
            assert page.text_content("#state") == "PROCESSED" and page.text_content("#place") == "batch"
            page.fill("#provider", "generic")
            page.fill("#call_id", "held-<b>1</b>")
            page.click("#find")
            assert page.text_content("#reason") == "no_identifier"

            # The counters table (worst first) and a counter's page, escaped.
            page.goto(f"{base}/console/counters")
            order = page.locator("tr.counter-row").evaluate_all("rows => rows.map(r => r.dataset.counter)")
            assert order.index("202") < order.index("101")  # quarantined first
            page.goto(f"{base}/console/counters/101")
            assert page.locator("tr.upload[data-state=PROCESSED]").count() == 2
            assert "held-<b>1</b>" in (page.text_content("#held") or "")  # shown as text, not markup
            page.screenshot(path=str(tmp_path / "console-counter.png"), full_page=True)

            # A forged CSRF token is refused and changes nothing.
            page.goto(f"{base}/console/quarantine")
            page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(i => i.value = 'forged')")
            page.click(f"tr[data-batch={quarantined}] button.replay")
            assert "CSRF" in (page.text_content("#error") or "") and states(rt, 202)[quarantined] == "QUARANTINED"
            forged = httpx.post(f"{base}/console/quarantine/{quarantined}/replay", data={"csrf": "forged"},
                                cookies={"calltrack_console": cookie["value"]})  # fmt: skip
            assert forged.status_code == 403 and states(rt, 202)[quarantined] == "QUARANTINED"

            # Replay from its button: sent again as a new batch, which Metrica takes.
            page.goto(f"{base}/console/quarantine")
            page.click(f"tr[data-batch={quarantined}] button.replay")
            assert "sent again as" in (page.text_content("#flash") or "")
            wait_for(lambda: "PROCESSED" in states(rt, 202).values(), timeout=60, what="the replayed batch PROCESSED")
            assert states(rt, 202)[quarantined] == "REPLAYED" and len(emulator.admin.rows(counter=202)) == 5
            followed = httpx.get(f"{base}/v1/calls/api/call-202-0", headers=auth).json()
            assert followed["state"] == "PROCESSED" and followed["batch"]["replay_of"] == quarantined
            page.goto(f"{base}/console/quarantine")
            assert page.locator("#empty").count() == 1
            page.click("#logout")
            page.goto(f"{base}/console/counters")
            assert page.url.startswith(f"{base}/console/login")
            browser.close()
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name in ("console-fleet.png", "console-counter.png"):
        shutil.copy(tmp_path / name, SHOTS / name)


def test_console_login_throttles_guessing(make_settings: Callable[..., Settings]) -> None:
    with running_ingest(make_settings(console_password=PASSWORD)) as base, httpx.Client(base_url=base) as client:
        client.get("/console/login")
        for _ in range(10):
            csrf = client.cookies.get("calltrack_console")
            assert csrf
            page = client.get("/console/login").text
            token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            answer = client.post("/console/login", data={"csrf": token, "user": "admin", "password": "guess"})
            assert answer.status_code == 401
        page = client.get("/console/login").text
        token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        answer = client.post("/console/login", data={"csrf": token, "user": "admin", "password": PASSWORD})
        assert answer.status_code == 429 and "Too many failed logins" in answer.text


def test_console_is_off_without_a_password(make_settings: Callable[..., Settings]) -> None:
    with running_ingest(make_settings()) as base:
        assert httpx.get(f"{base}/console/").status_code == 404
