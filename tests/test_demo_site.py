"""The standalone demo's shop page in headless Chromium: the site tag swaps the shop's static number for a
pool number, and the simulated call to it reaches the emulator with the visitor's ClientId. A screenshot
of the swapped page is saved as var/demo-shop-tag.png (not committed; docs/demo-shop-tag.png, which the
README shows, is a copy of one)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from config.settings import Settings
from standalone.feed import POOL_NUMBERS, ZADARMA_SECRET, demo_routes
from standalone.site import DEMO_STATIC_NUMBER
from standalone.site import create_app as create_site
from tests.helpers import chromium
from tests.pipeline import running_emulator, running_ingest, running_worker, serving
from worker.intake.service import build_intake
from worker.runtime import Runtime

SHOT = Path(__file__).resolve().parent.parent / "var" / "demo-shop-tag.png"


def test_the_shop_page_shows_a_number_and_its_call_arrives_with_the_visitors_client_id(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with running_emulator(step_seconds=0.2) as emulator:
        settings = make_settings(
            metrica_base_url=emulator.base_url,
            zadarma_secrets={"demo": ZADARMA_SECRET},
            pool_fallback_numbers={202: DEMO_STATIC_NUMBER},
        )
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
            page = browser.new_page(viewport={"width": 900, "height": 560})
            page.goto(site_url + "/")
            page.wait_for_function("window.CalltrackTag && window.CalltrackTag.state === 'swapped'", timeout=20_000)
            page.wait_for_selector("#call:not([disabled])")
            number = page.evaluate("window.CalltrackTag.number")
            shown, href = page.text_content("#number"), page.get_attribute("#number", "href")
            client_id = page.text_content("#cid")
            written = page.text_content("p:has-text('write it down')")
            skipped = page.text_content("[data-calltrack-skip]")
            SHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SHOT))
            page.click("#call")
            page.wait_for_function("document.getElementById('trace').textContent.includes('PROCESSED')", timeout=60_000)
            trace = page.text_content("#trace") or ""
            browser.close()
        rows = [r for r in emulator.admin.rows(counter=202) if r.get("ClientId") == client_id]
    demo_pool = {"+74950000202", *POOL_NUMBERS}
    assert number in demo_pool and href == f"tel:{number}"
    assert shown == f"+7 495 {number[5:8]}-{number[8:10]}-{number[10:]}"  # the static number's spelling
    assert written == f"Or write it down: 8 (495) {number[5:8]}-{number[8:10]}-{number[10:]}."
    assert skipped == "+7 495 111-22-33"  # data-calltrack-skip: left as it is
    assert f"PROCESSED, ClientId {client_id}" in trace
    assert len(rows) == 1 and rows[0]["StaticCall"] == "0" and rows[0]["URL"].startswith(site_url)
