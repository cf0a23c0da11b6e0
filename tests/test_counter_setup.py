"""Issue 24, items 4, 6 and 9: counter setup from what Metrica answers today, in its own task, and
quota budgets per method group; each against the emulator over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from config.settings import Settings
from ctl.__main__ import main as ctl_main
from ctl.context import Context
from emulator.config import Account
from tests.helpers import make_call, wait_for
from tests.pipeline import running_emulator, running_worker
from worker.dataplane.ids import fingerprint
from worker.delivery import counter_setup
from worker.delivery.counter_setup import CALLS_OPTION, CONVERSIONS_OPTION, Readiness, readiness, setup_counter
from worker.delivery.quota import Purpose, QuotaExhausted, QuotaGate
from worker.errors import JoinWindowClosed
from worker.model.kinds import Bucket, IdType, UploadKind
from worker.ops import scrape
from worker.runtime import Runtime

LEAD = {"name": "lead", "type": "action", "conditions": [{"type": "exact", "url": "lead"}]}


def _management_requests(emulator: object) -> int:
    return int(emulator.admin.stats()["counts"].get("requests.management", 0))  # type: ignore[attr-defined]


def test_setup_reads_the_thresholds_switches_each_option_once_and_reuses_goals(
    make_settings: Callable[..., Settings],
) -> None:
    with running_emulator() as emulator:
        emulator.admin.set_counter(401, goals=[LEAD])
        rt = Runtime(make_settings(metrica_base_url=emulator.base_url))
        token = rt.settings.token_for(401)
        assert token is not None
        # Today's counter object has no offline_options: nothing may be read from it.
        answer = httpx.get(
            f"{emulator.base_url}/management/v1/counter/401",
            headers={"Authorization": f"OAuth {token.get_secret_value()}"},
        ).json()
        assert "offline_options" not in answer["counter"]

        check = ["counters", "setup", "401", "--check", "--json"]
        checked = CliRunner().invoke(ctl_main, check, obj=Context(rt.settings))
        assert checked.exit_code == 1  # never switched on: --check says so, and changes nothing
        (seen,) = orjson.loads(checked.stdout)
        assert not seen["ready"] and seen["enabled_at"] == {} and set(seen["join_from"]) == {"calls", "conversions"}
        assert not any(emulator.admin.counter(401)["offline_options"].values())

        before = _management_requests(emulator)
        first = setup_counter(rt, 401, ["lead", "paid"], apply=True)
        assert first.ready and sorted(first.switched_on) == [CALLS_OPTION, CONVERSIONS_OPTION]
        assert first.goals_created == ["paid"]  # "lead" existed: reused, not made twice
        counter = emulator.admin.counter(401)
        assert counter["offline_options"][CALLS_OPTION] and counter["offline_options"][CONVERSIONS_OPTION]
        assert sorted(g["name"] for g in counter["goals"]) == ["lead", "paid"]
        # 2 switches + 2 threshold reads + goals read + one goal made
        assert _management_requests(emulator) - before == 6

        before = _management_requests(emulator)
        again = setup_counter(rt, 401, ["lead", "paid"], apply=True)
        assert again.ready and again.switched_on == [] and again.goals_created == []
        assert again.enabled_at == first.enabled_at
        assert _management_requests(emulator) - before == 3  # only reads: nothing switched twice

        check = ["counters", "setup", "401", "--check", "--json"]
        checked = CliRunner().invoke(ctl_main, check, obj=Context(rt.settings))
        assert checked.exit_code == 0, checked.output
        (seen,) = orjson.loads(checked.stdout)
        assert seen["ready"] and set(seen["enabled_at"]) == {CALLS_OPTION, CONVERSIONS_OPTION}
        rt.close()


def test_a_record_of_before_issue_24_is_read_as_switched_on_once(make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings())
    old = {"counter_id": 5, "checked_at": 1000, "options": {CALLS_OPTION: True, CONVERSIONS_OPTION: True},
           "join_from": {}, "goals": [], "switched_on": [CALLS_OPTION], "goals_created": [], "missing_goals": [],
           "error": "", "ready": True}  # fmt: skip
    found = Readiness.from_json(orjson.dumps(old))
    assert found.enabled_at == {CALLS_OPTION: 1000} and found.options == {CALLS_OPTION: True} and not found.ready
    rt.close()


def test_a_new_counters_data_waits_for_its_join_window_or_goes_with_a_warning(
    make_settings: Callable[..., Settings],
) -> None:
    with running_emulator() as emulator:
        calls = Bucket(402, UploadKind.CALLS, IdType.CLIENT_ID)
        held = Runtime(make_settings(metrica_base_url=emulator.base_url, counter_join_wait="hold"))
        setup_counter(held, 402, apply=True)
        with pytest.raises(JoinWindowClosed) as raised:
            counter_setup.hold(held, calls, "none")
        assert 86000 < raised.value.retry_after <= 86400  # about a day after switching the option on
        warned = Runtime(make_settings(metrica_base_url=emulator.base_url, counter_join_wait="warn"))
        counter_setup.hold(warned, calls, "none")  # goes, counted
        assert warned.redis.hget(warned.keys.metrics, "uploads_before_join_window|calls") == "1"
        opened = Runtime(make_settings(metrica_base_url=emulator.base_url, counter_join_wait_seconds=0))
        counter_setup.hold(opened, calls, "none")  # the window is open: nothing to wait for
        for rt in (held, warned, opened):
            rt.close()


def test_slow_settings_never_block_uploads(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """Settings requests of 5 s with a 1 s read timeout: the setup task fails with its reason recorded,
    the upload goes anyway (a real worker, the emulator slow on its management endpoints only)."""
    with running_emulator(step_seconds=0.1) as emulator:
        emulator.admin.set_faults(latency=5, kinds=["management"])
        settings = make_settings(
            metrica_base_url=emulator.base_url,
            http_read_timeout=1,
            counter_setup_deadline_seconds=5,
            counter_join_wait="hold",
        )
        with running_worker(settings, tmp_path) as app:
            rt = app.runtime()
            Runtime(settings).producer.submit([make_call(403, n) for n in range(3)])
            wait_for(
                lambda: (found := readiness(rt, [403]).get(403)) is not None and bool(found.error),
                timeout=30,
                what="the setup's failure recorded",
            )
            wait_for(
                lambda: [u["status"] for u in emulator.admin.uploads(counter=403, with_rows=False)] == ["PROCESSED"],
                timeout=30,
                what="the batch uploaded despite the slow settings API",
            )
            rt.redis.hset(rt.keys.counter_setup, "pending:999", 1)  # a setup under way elsewhere: /metrics reads on
            scraped = scrape.render(scrape.registry(rt.redis, rt.keys, settings)).decode()
            assert 'calltrack_counter_ready{counter_id="403"} 0.0' in scraped and 'counter_id="999"' not in scraped
            rt.redis.hdel(rt.keys.counter_setup, "pending:999")
        failed = readiness(rt, [403])[403]
        assert "counter setup failed" in failed.error and not failed.ready
        assert not rt.redis.hexists(rt.keys.counter_setup, "pending:403")  # the task ended: retried later


def test_quota_groups_are_counted_apart_and_carry_the_days_count_over(
    make_settings: Callable[..., Settings],
) -> None:
    with running_emulator() as emulator:
        rt = Runtime(make_settings(metrica_base_url=emulator.base_url, quota_daily_per_login=6))
        token = rt.settings.token_for(404)
        assert token is not None
        gate, login = QuotaGate(rt), rt.accounts.login_of(token)
        day = datetime.now(UTC).strftime("%Y%m%d")
        # A day begun by the release before: 4 uploads and 5 polls counted under the old purpose keys.
        rt.redis.set(rt.keys.quota_day_purpose(login, "upload", day), 4)
        rt.redis.set(rt.keys.quota_day_purpose(login, "poll", day), 5)
        with gate.permit(token, Purpose.READ):  # setup's reads are client_read: the 6th of that group
            rt.metrica.management("GET", "/management/v1/counter/404/goals", token, "goals")
        with pytest.raises(QuotaExhausted) as spent, gate.permit(token, Purpose.POLL):
            pass
        assert spent.value.quota == "daily"
        for _ in range(2):  # client_write still has 2 of its own 6
            with gate.permit(token, Purpose.UPLOAD):
                pass
        with pytest.raises(QuotaExhausted), gate.permit(token, Purpose.WRITE):
            pass
        (view,) = [q for q in gate.view() if q.login == login]
        assert view.used == {"client_read": 6, "client_write": 6}
        shown = CliRunner().invoke(ctl_main, ["counters", "quota", "--json"], obj=Context(rt.settings))
        (row,) = [r for r in orjson.loads(shown.stdout) if r["login"] == login]
        assert row["used"] == {"client_read": 6, "client_write": 6} and row["left"] == {
            "client_read": 0,
            "client_write": 0,
        }
        text = scrape.render(scrape.registry(rt.redis, rt.keys, rt.settings)).decode()
        assert f'calltrack_quota_group_used_today{{group="client_write",login="{login}"}} 6.0' in text
        assert fingerprint(token) not in text or login == fingerprint(token)
        rt.close()


def test_a_token_string_never_names_a_quota_key(make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings())
    secret = SecretStr("a-very-secret-token")
    with QuotaGate(rt).permit(secret, Purpose.WRITE):
        pass
    assert not [k for k in rt.redis.scan_iter(match=f"{rt.settings.namespace}:*") if "a-very-secret-token" in k]
    rt.close()


# --- item 5: scopes -------------------------------------------------------------------------------


def _consent(link: str, scope: str | None) -> tuple[str, str]:
    """Through the emulator's consent form as a user would (scope as the link asks, or changed)."""
    from urllib.parse import parse_qs, urlsplit

    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    if scope is not None:
        query["scope"] = scope
    root = link.split("/authorize", 1)[0]
    form = {**query, "login": "shop-owner", "decision": "allow"}
    answer = httpx.post(f"{root}/authorize", data=form, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    back = parse_qs(urlsplit(answer.headers["location"]).query)
    return back["code"][0], back["state"][0]


def test_the_link_asks_for_the_scopes_used_and_the_callback_names_the_missing_ones(
    make_settings: Callable[..., Settings],
) -> None:
    from tests.accounts_helpers import account_settings
    from worker.accounts import oauth
    from worker.errors import OAuthError

    accounts = (Account("seed-token-of-shop-owner", "shop-owner", frozenset({5101})),)
    with running_emulator(accounts=accounts) as emulator:
        rt = Runtime(account_settings(make_settings, emulator))
        link = oauth.start(rt.accounts, "shop")
        assert "scope=metrika%3Aread+metrika%3Awrite+metrika%3Aoffline_data" in link
        page = httpx.get(link).text
        assert "metrika:offline_data" in page and "metrika:write" in page

        with pytest.raises(OAuthError) as refused:  # only the upload scope granted
            oauth.finish(rt.accounts, *_consent(oauth.start(rt.accounts, "shop"), "metrika:offline_data"))
        assert "metrika:read" in str(refused.value) and "offline_data" not in str(refused.value).split(":", 1)[0]
        assert rt.accounts.accounts() == []  # nothing stored
        with pytest.raises(OAuthError, match=r"lacks the scopes metrika:offline_data\b"):
            oauth.finish(rt.accounts, *_consent(oauth.start(rt.accounts, "shop"), "metrika:read"))

        done = oauth.finish(rt.accounts, *_consent(link, None))  # all three, as the link asks
        assert [c.id for c in done.account.counters] == [5101]
        rt.close()


def test_the_emulator_refuses_a_method_without_its_scope(make_settings: Callable[..., Settings]) -> None:
    with running_emulator(accounts=(Account("t", "shop", None),)) as emulator:
        upload_only = emulator.admin.issue_token("shop", scopes=["metrika:offline_data"])["access_token"]
        read_only = emulator.admin.issue_token("shop", scopes=["metrika:read"])["access_token"]

        def get(path: str, token: str) -> httpx.Response:
            return httpx.get(f"{emulator.base_url}{path}", headers={"Authorization": f"OAuth {token}"})

        counters = get("/management/v1/counters", upload_only)
        assert counters.status_code == 403 and counters.json()["errors"][0]["error_type"] == "access_denied"
        assert get("/management/v1/counter/7/offline_conversions/calls_uploadings", upload_only).status_code == 200
        assert get("/management/v1/counters", read_only).status_code == 200
        assert get("/management/v1/counter/7/offline_conversions/calls_uploadings", read_only).status_code == 403
        switch = httpx.post(
            f"{emulator.base_url}/management/v1/counter/7/offline_conversions/calls_extended_threshold",
            headers={"Authorization": f"OAuth {read_only}"},
        )
        assert switch.status_code == 403  # a change needs metrika:write
        # Counter setup with a token lacking metrika:write records the refusal; nothing is switched on.
        rt = Runtime(make_settings(metrica_base_url=emulator.base_url, metrica_token=read_only))
        found = setup_counter(rt, 7, apply=True)
        assert "403" in found.error or "scope" in found.error
        assert not any(emulator.admin.counter(7)["offline_options"].values())
        rt.close()


# --- item 8: removed counters ---------------------------------------------------------------------


def test_a_removed_counters_uploads_are_reconciled_with_their_token_or_quarantined(
    make_settings: Callable[..., Settings],
) -> None:
    from cryptography.fernet import Fernet

    from tests.helpers import seal_batch
    from worker.accounts import edits
    from worker.accounts.model import AccountIn, parse
    from worker.delivery import reconciler, uploader

    acme, beta = "y0_acme-token-0000000000000001", "y0_beta-token-0000000000000002"
    accounts = (Account(acme, "acme-login", frozenset({601, 602})), Account(beta, "beta-login", frozenset({701})))
    with running_emulator(step_seconds=0.05, accounts=accounts) as emulator:
        settings = make_settings(
            metrica_base_url=emulator.base_url, emulator_url=emulator.base_url,
            secret_keys=Fernet.generate_key().decode(), accounts_cache_seconds=0, counter_setup="off",
        )  # fmt: skip
        rt = Runtime(settings)
        for account, token, counters in (("acme", acme, [601, 602]), ("beta", beta, [701])):
            spec = {
                "id": account,
                "tokens": [{"name": "main", "token": token}],
                "counters": [{"id": c} for c in counters],
            }
            rt.accounts.put(parse(AccountIn, spec))
        kept, orphan = seal_batch(rt, 601), seal_batch(rt, 701)
        assert uploader.upload_batch(rt, kept).value == "posted"
        assert uploader.upload_batch(rt, orphan).value == "posted"
        assert rt.redis.hget(rt.keys.batch(kept), "token_fp") == fingerprint(SecretStr(acme))
        edits.remove_counter(rt.accounts, 601)  # the account (and its token) stays
        assert 701 in rt.accounts.snapshot().by_counter and 601 in rt.accounts.snapshot().removed
        # The whole of beta goes: its counter and its token.
        rt.accounts.sync([parse(AccountIn, {"id": "acme", "tokens": [{"name": "main"}], "counters": [{"id": 602}]})])
        assert {601, 701} <= rt.accounts.snapshot().removed
        assert beta not in {t.get_secret_value() for t in rt.accounts.tokens()}  # beta and its token are gone
        wait_for(
            lambda: (
                reconciler.reconcile(rt)
                and rt.redis.hget(rt.keys.batch(kept), "state") == "PROCESSED"
                and rt.redis.hget(rt.keys.batch(orphan), "state") == "QUARANTINED"
            ),
            timeout=20,
            what="the removed counters' batches closed",
        )
        assert rt.redis.hget(rt.keys.batch(kept), "status") == "PROCESSED"
        assert 0 < rt.redis.ttl(rt.keys.rows(kept)) <= settings.rows_retention_seconds  # its rows expire
        assert "counter_removed" in str(rt.redis.hget(rt.keys.batch(orphan), "reason"))
        logins = {u["login"] for u in emulator.admin.uploads(with_rows=False)}
        assert logins == {"acme-login", "beta-login"}  # nothing asked with another account's token
        rt.close()


def test_setup_stops_at_its_own_deadline_and_says_so(make_settings: Callable[..., Settings]) -> None:
    with running_emulator() as emulator:
        emulator.admin.set_faults(latency=0.6, kinds=["management"])
        rt = Runtime(make_settings(metrica_base_url=emulator.base_url))
        found = setup_counter(rt, 405, apply=True, deadline=1.0)  # each request within its timeout, all not
        assert "ran past its deadline" in found.error and not found.ready
        assert readiness(rt, [405])[405].error == found.error  # recorded: the next try comes an hour later
        assert found.enabled_at  # what it switched on before the deadline is kept: never posted twice
        rt.close()
