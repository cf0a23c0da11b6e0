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


def test_a_token_near_expiry_is_refreshed_before_it_expires(make_settings: Callable[..., Settings]) -> None:
    import time

    from worker.accounts.health import problems
    from worker.accounts.model import AccountIn, parse
    from worker.accounts.upkeep import upkeep

    with running_emulator(step_seconds=0.1, accounts=(Account(SEED, "shop-owner"),)) as emulator:
        issued = emulator.admin.issue_token(
            "shop-owner", lifetime=5 * 86_400, refresh=True, client_id="emulator-client"
        )
        settings = account_settings(make_settings, emulator)
        rt = Runtime(settings)
        soon = time.time() + 5 * 86_400
        token = {"token": issued["access_token"], "refresh_token": issued["refresh_token"], "expires_at": soon}
        rt.accounts.put(parse(AccountIn, {"id": "shop", "tokens": [token], "counters": [{"id": 5001}]}))
        assert [p.state for p in problems(rt.redis, rt.keys, settings.token_warning_days)] == ["near_expiry"]
        assert upkeep(rt.accounts).refreshed == 1
        fresh = rt.accounts.get("shop")
        assert fresh is not None and fresh.tokens[0].value.get_secret_value() != issued["access_token"]
        assert fresh.tokens[0].expires_at is not None and fresh.tokens[0].expires_at > soon + 86_400
        assert problems(rt.redis, rt.keys, settings.token_warning_days) == []
        assert upkeep(rt.accounts).refreshed == 0  # nothing due any more
        rt.close()


def test_the_admin_api_needs_its_bearer_and_refuses_bad_input_whole(make_settings: Callable[..., Settings]) -> None:
    import httpx

    with running_emulator(step_seconds=0.1) as emulator:
        off = account_settings(make_settings, emulator, admin_api_token=None)
        with running_ingest(off) as ingest:
            assert httpx.get(f"{ingest}/admin/v1/accounts", timeout=10).status_code == 404
        settings = account_settings(make_settings, emulator)
        with running_ingest(settings) as ingest:
            assert httpx.get(f"{ingest}/admin/v1/accounts", timeout=10).status_code == 401
            wrong = {"Authorization": "Bearer nope"}
            assert httpx.get(f"{ingest}/admin/v1/accounts", headers=wrong, timeout=10).status_code == 403
            good = [{"id": "ok", "tokens": [{"token": "tok-1"}], "counters": [{"id": 7}]}]
            bad = [*good, {"id": "bad", "counters": [{"id": 8, "flush_age": -1}]}]
            answer = admin(ingest, "PUT", "/accounts", {"accounts": bad})
            assert answer.status_code == 422
            assert answer.json()["errors"] == [
                {"field": "accounts.1.counters.0.flush_age", "rule": "Input should be greater than 0"}
            ]
            assert admin(ingest, "GET", "/accounts").json() == {"accounts": []}  # nothing stored
            assert admin(ingest, "PUT", "/accounts", {"accounts": good}).json()["created"] == 1
            assert admin(ingest, "PUT", "/accounts", {"accounts": good}).json()["unchanged"] == 1
            path = "/accounts/ok/telephony/mango/shop"
            refused = admin(ingest, "PUT", path, {"timezone": "UTC"})
            assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "secret"
            assert admin(ingest, "PUT", path, {"secret": "key:salt"}).json()["updated"] == 1
            assert admin(ingest, "GET", "/accounts/ok").json()["telephony"][0]["has_secret"] is True
            assert admin(ingest, "DELETE", path).json()["updated"] == 1
            assert admin(ingest, "PUT", "/accounts", {"accounts": []}).json()["removed"] == 1
