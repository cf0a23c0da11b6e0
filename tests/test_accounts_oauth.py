"""OAuth onboarding in a real browser: the admin API's link, the emulator's consent page, the callback,
and the account appears with its login and the counters its token reaches; then it uploads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from config.settings import Settings
from emulator.config import Account
from tests.accounts_helpers import account_settings, admin
from tests.helpers import chromium, make_call, wait_for
from tests.pipeline import running_emulator, running_ingest, running_worker
from worker.accounts import oauth
from worker.errors import OAuthError
from worker.runtime import Runtime

SEED = "AQAAAAAshopSeedToken00000000000000009"


def test_a_client_onboards_by_oauth_in_the_browser(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    accounts = (Account(SEED, "shop-owner", frozenset({5001, 5002})), Account("other-seed-token", "other"))
    with running_emulator(step_seconds=0.1, accounts=accounts) as emulator:
        settings = account_settings(make_settings, emulator)
        with running_worker(settings, tmp_path), running_ingest(settings) as ingest, sync_playwright() as pw:
            link = admin(ingest, "POST", f"/accounts/shop/oauth?redirect_uri={ingest}/oauth/callback")
            assert link.status_code == 200, link.text
            browser = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(link.json()["url"])
            page.select_option("#login", "shop-owner")
            page.click("#allow")
            page.wait_for_selector("#account", timeout=20_000)
            shown_account = page.text_content("#account")
            shown_login = page.text_content("#login")
            shown_counters = sorted(int(c) for c in page.locator("#counters li").all_text_contents())
            browser.close()
            account = admin(ingest, "GET", "/accounts/shop").json()
            Runtime(settings).producer.submit([make_call(5001, n) for n in range(3)])
            wait_for(lambda: len(emulator.admin.rows(counter=5001)) == 3, timeout=60, what="the new account uploads")
        upload_logins = {u["login"] for u in emulator.admin.uploads(counter=5001, with_rows=False)}
    assert (shown_account, shown_login, shown_counters) == ("shop", "shop-owner", [5001, 5002])
    assert account["login"] == "shop-owner"
    assert [c["id"] for c in account["counters"]] == [5001, 5002]
    assert account["tokens"][0]["has_refresh_token"] is True and account["tokens"][0]["expires_at"]
    assert upload_logins == {"shop-owner"}


def test_a_used_or_unknown_state_is_refused_and_stores_nothing(make_settings: Callable[..., Settings]) -> None:
    with running_emulator(step_seconds=0.1) as emulator:
        settings = account_settings(make_settings, emulator)
        rt = Runtime(settings)
        with pytest.raises(OAuthError, match="unknown, used or expired"):
            oauth.finish(rt.accounts, "1234567", "made-up-state")
        assert rt.accounts.accounts() == []
        rt.close()
