"""Token health at the door (issue 25 item 4): a token Yandex's user info refuses (401/403) when it is
added is stored marked ``refused``; ``ctl`` exits 1 naming the account and token (never the token), and
the token shows refused in ``accounts list``, the doctor, ``/admin/v1/problems`` and ``/metrics``. A check
that cannot reach Yandex is ``unchecked``, not a refusal. Real Redis, the emulator over HTTP, a real
ingestion service.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson

from config.settings import Settings
from ctl.doctor import check_accounts
from emulator.config import Account
from tests.accounts_helpers import SECRET_KEY, account_settings, admin, ctl
from tests.pipeline import running_emulator, running_ingest
from worker.accounts.health import problems
from worker.runtime import Runtime

GOOD = "AQAAAAAgoodSeedToken000000000000001"
BAD = "AQAAAAAbadUnknownToken0000000000009"


def test_a_refused_token_is_marked_and_shown_everywhere(make_settings: Callable[..., Settings]) -> None:
    with running_emulator(step_seconds=0.1, accounts=(Account(GOOD, "acme"),)) as emulator:
        settings = account_settings(make_settings, emulator)
        code, out = ctl(settings, "accounts", "add", "bad", "--counter", "3001", "--token-stdin", stdin=BAD + "\n")
        assert code == 1, out
        assert "account bad: token main refused by Yandex" in out and BAD not in out
        code, out = ctl(settings, "accounts", "add", "acme", "--counter", "3002", "--token-stdin", stdin=GOOD + "\n")
        assert code == 0, out
        assert "refused" not in out

        code, out = ctl(settings, "accounts", "list", "--json")
        listed = {a["id"]: a for a in orjson.loads(out)["accounts"]}
        assert listed["bad"]["problems"] == ["main refused"] and listed["acme"]["problems"] == []
        assert listed["bad"]["tokens"][0]["check"] == "refused" and listed["acme"]["tokens"][0]["check"] == "ok"
        assert BAD not in out

        rt = Runtime(settings)
        try:
            found = problems(rt.redis, rt.keys, settings.token_warning_days)
            assert [(p.account, p.token, p.state) for p in found] == [("bad", "main", "refused")]
            doctor = check_accounts(rt)
            assert [(c.name, c.status) for c in doctor] == [("account bad", "fail")]
            assert "refused" in doctor[0].detail and BAD not in doctor[0].detail
        finally:
            rt.close()

        with running_ingest(settings) as ingest:
            answer = admin(ingest, "GET", "/problems")
            assert answer.status_code == 200
            assert [(p["account"], p["state"]) for p in answer.json()["problems"]] == [("bad", "refused")]
            # Put through the admin API: the same check marks the token.
            put = admin(ingest, "PUT", "/accounts/other", {"id": "other", "tokens": [{"token": BAD + "x"}]})
            assert put.status_code in (200, 201), put.text
            assert put.json()["token_checks"] == {"other": {"main": "refused"}}
            states = {(p["account"], p["state"]) for p in admin(ingest, "GET", "/problems").json()["problems"]}
            assert states == {("bad", "refused"), ("other", "refused")}
            metrics = httpx.get(f"{ingest}/metrics", timeout=30).text
            line = 'calltrack_account_token_problem{account="bad",state="refused",token="main"} 1.0'
            assert line in metrics, metrics
            assert BAD not in metrics, [x for x in metrics.splitlines() if BAD in x]

        # A good token in its place clears the mark.
        code, out = ctl(settings, "accounts", "update", "bad", "--token-stdin", stdin=GOOD + "\n")
        assert code == 0, out
        code, out = ctl(settings, "accounts", "list", "--json")
        assert {a["id"]: a["problems"] for a in orjson.loads(out)["accounts"]}["bad"] == []


def test_an_unreachable_check_is_unchecked_not_refused(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(secret_keys=SECRET_KEY, emulator_url="http://127.0.0.1:9", accounts_cache_seconds=0)
    code, out = ctl(settings, "accounts", "add", "far", "--counter", "3003", "--token-stdin", stdin=BAD + "\n")
    assert code == 0, out
    assert "account far: token main unchecked" in out and BAD not in out
    code, out = ctl(settings, "accounts", "list", "--json")
    listed = orjson.loads(out)["accounts"][0]
    assert listed["problems"] == [] and listed["tokens"][0]["check"] == "unchecked"
