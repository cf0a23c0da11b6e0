"""The standalone demo's shop page in headless Chromium: it shows a pool number, and the simulated
call to it reaches the emulator with the visitor's ClientId."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from config.settings import Settings
from standalone.feed import POOL_NUMBERS, ZADARMA_SECRET, demo_routes
from standalone.site import create_app as create_site
from tests.helpers import chromium
from tests.pipeline import running_emulator, running_ingest, running_worker, serving
from worker.intake.service import build_intake
from worker.runtime import Runtime


def test_the_shop_page_shows_a_number_and_its_call_arrives_with_the_visitors_client_id(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with running_emulator(step_seconds=0.2) as emulator:
        settings = make_settings(metrica_base_url=emulator.base_url, zadarma_secrets={"demo": ZADARMA_SECRET})
        rt = Runtime(settings)
        build_intake(rt).routing.add(demo_routes())
        rt.close()
        with (
            running_worker(settings, tmp_path),
            running_ingest(settings) as ingest_url,
            serving(create_site(ingest_url, emulator.base_url)) as site_url,
            sync_playwright() as pw,
        ):
            browser = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(site_url + "/")
            page.wait_for_function("document.getElementById('number').textContent.startsWith('+')", timeout=20_000)
            number = page.text_content("#number")
            client_id = page.text_content("#cid")
            page.click("#call")
            page.wait_for_function("document.getElementById('trace').textContent.includes('PROCESSED')", timeout=60_000)
            trace = page.text_content("#trace") or ""
            browser.close()
        rows = [r for r in emulator.admin.rows(counter=202) if r.get("ClientId") == client_id]
    demo_pool = {"+74950000202", *POOL_NUMBERS}
    assert number in demo_pool
    assert f"PROCESSED, ClientId {client_id}" in trace
    assert len(rows) == 1 and rows[0]["StaticCall"] == "0" and rows[0]["URL"].startswith(site_url)
