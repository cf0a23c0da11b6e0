"""Accounts on real parts: Redis, a Celery worker and beat, the ingestion service and the emulator over HTTP.

Added through the CLI or the admin API, accounts upload without a restart; a removed counter's batches
wait, visible; a rotated token is used next; two tokens of one login share its 3 parallel requests; an
expired token is refreshed; a refused token pauses only its own account's counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import httpx
import orjson
from pydantic import SecretStr

from config.settings import Settings
from emulator.config import Account
from emulator.server import RunningEmulator
from tests.accounts_helpers import account_settings, admin, ctl
from tests.helpers import make_call, wait_for
from tests.pipeline import running_emulator, running_ingest, running_worker
from worker.dataplane.ids import fingerprint
from worker.runtime import Runtime

ACME = "AQAAAAAacmeSeedToken000000000000001"
BETA = "AQAAAAAbetaSeedToken000000000000002"
SEEDS = (Account(ACME, "acme"), Account(BETA, "beta"))


def rows_of(emulator: RunningEmulator, counter: int) -> list[dict[str, str]]:
    return emulator.admin.rows(counter=counter)


def logins_of(emulator: RunningEmulator, counter: int) -> set[str]:
    return {str(u["login"]) for u in emulator.admin.uploads(counter=counter, with_rows=False)}


def submit(settings: Settings, counter: int, first: int, count: int) -> None:
    result = Runtime(settings).producer.submit([make_call(counter, n) for n in range(first, first + count)])
    assert len(result.accepted) == count


def test_accounts_added_by_cli_and_admin_api_upload_without_restart(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with running_emulator(step_seconds=0.1, accounts=SEEDS) as emulator:
        settings = account_settings(make_settings, emulator)
        with running_worker(settings, tmp_path), running_ingest(settings) as ingest:
            code, out = ctl(
                settings, "accounts", "add", "acme", "--counter", "1001", "--token-stdin", stdin=ACME + "\n"
            )
            assert code == 0, out
            answer = admin(
                ingest, "POST", "/accounts", {"id": "beta", "tokens": [{"token": BETA}], "counters": [{"id": 2001}]}
            )
            assert answer.status_code == 201, answer.text
            submit(settings, 1001, 0, 10)
            submit(settings, 2001, 0, 10)
            wait_for(lambda: len(rows_of(emulator, 1001)) == 10 and len(rows_of(emulator, 2001)) == 10, timeout=60,
                     what="both accounts' calls at Metrica")  # fmt: skip
        # Each counter went out with its own account's token (the default would be the demo login).
        assert logins_of(emulator, 1001) == {"acme"} and logins_of(emulator, 2001) == {"beta"}
        code, out = ctl(settings, "accounts", "list", "--json")
        listed = {a["id"]: a for a in orjson.loads(out)["accounts"]}
        assert listed["acme"]["login"] == "acme" and listed["beta"]["login"] == "beta"  # learned from user info
        assert ACME not in out and BETA not in out


def test_removing_a_counter_stops_its_uploads_and_leaves_its_batches_visible(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with running_emulator(step_seconds=0.1, accounts=SEEDS) as emulator:
        settings = account_settings(make_settings, emulator)
        rt = Runtime(settings)
        body = {"id": "acme", "tokens": [{"token": ACME}], "counters": [{"id": 1001}, {"id": 1002}]}
        assert ctl(settings, "accounts", "sync", "-", stdin=orjson.dumps({"accounts": [body]}).decode())[0] == 0
        with running_worker(settings, tmp_path):
            submit(settings, 1002, 0, 5)
            wait_for(lambda: len(rows_of(emulator, 1002)) == 5, timeout=60, what="1002 uploads before removal")
            code, out = ctl(settings, "counters", "remove", "1002")
            assert code == 0, out
            submit(settings, 1002, 100, 5)
            submit(settings, 1001, 0, 5)
            wait_for(lambda: len(rows_of(emulator, 1001)) == 5, timeout=60, what="1001 keeps uploading")

            def sealed_batches() -> list[str]:
                found = []
                for shard in range(settings.shards):
                    for batch_id in cast(list[str], rt.redis.zrange(rt.keys.sealed(shard), 0, -1)):
                        if str(rt.redis.hget(rt.keys.batch(batch_id), "bucket")).startswith("1002:"):
                            found.append(batch_id)
                return found

            waiting = wait_for(sealed_batches, timeout=30, what="1002's new batch sealed")
            wait_for(lambda: rt.redis.hget(rt.keys.batch(waiting[0]), "state") == "SEALED", timeout=10, what="sealed")
            time.sleep(3)  # several drain and sweep rounds: nothing of 1002 goes out
        assert len(rows_of(emulator, 1002)) == 5
        assert rt.redis.hget(rt.keys.batch(waiting[0]), "state") == "SEALED"
        code, out = ctl(settings, "counters", "list", "--json")
        assert orjson.loads(out)["removed"] == [1002]
        code, out = ctl(settings, "status", "--json")
        shown = next(item for item in orjson.loads(out) if item["counter_id"] == 1002)
        assert shown["open_batches"] >= 1  # the waiting batch is visible
        rt.close()


def test_a_rotated_token_is_used_by_the_next_upload(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with running_emulator(step_seconds=0.1, accounts=SEEDS) as emulator:
        first = emulator.admin.issue_token("acme")["access_token"]
        second = emulator.admin.issue_token("acme")["access_token"]
        settings = account_settings(make_settings, emulator)
        with running_worker(settings, tmp_path), running_ingest(settings) as ingest:
            body = {"id": "acme", "tokens": [{"token": first}], "counters": [{"id": 1001}]}
            assert admin(ingest, "PUT", "/accounts/acme", body).status_code == 200
            submit(settings, 1001, 0, 5)
            wait_for(lambda: len(rows_of(emulator, 1001)) == 5, timeout=60, what="uploads with the first token")
            answer = admin(ingest, "PUT", "/accounts/acme/tokens/main", {"token": second})
            assert answer.status_code == 200 and answer.json()["updated"] == 1, answer.text
            emulator.admin.revoke_token(first)  # the old token now fails: only the new one can upload
            submit(settings, 1001, 100, 5)
            wait_for(lambda: len(rows_of(emulator, 1001)) == 10, timeout=60, what="uploads with the rotated token")
        rt = Runtime(settings)
        assert rt.redis.hlen(rt.keys.paused) == 0
        rt.close()


def test_two_tokens_of_one_login_share_its_three_parallel_requests(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with running_emulator(step_seconds=0.1, accounts=SEEDS) as emulator:
        one = emulator.admin.issue_token("acme")["access_token"]
        two = emulator.admin.issue_token("acme")["access_token"]
        emulator.admin.set_faults(latency=0.4, kinds=["upload"])
        emulator.admin.reset_login_stats()
        settings = account_settings(make_settings, emulator, flush_max_age=0.3)
        counters_a, counters_b = list(range(3001, 3007)), list(range(3101, 3107))
        rt = Runtime(settings)
        rt.accounts.sync(
            [
                _spec("shop-a", one, counters_a),
                _spec("shop-b", two, counters_b),
            ]
        )
        assert rt.accounts.login_of(SecretStr(one)) == rt.accounts.login_of(SecretStr(two)) == "login.acme"
        with running_worker(settings, tmp_path, concurrency=10):
            for counter in counters_a + counters_b:
                submit(settings, counter, 0, 3)
            wait_for(lambda: emulator.admin.stats()["rows"] == 36, timeout=120, what="every call at Metrica")
        stats = emulator.admin.logins()["acme"]
        assert stats["peak_parallel"] <= 3, stats
        assert stats["peak_parallel"] >= 2, stats  # the run did overlap requests
        assert stats["quota_rejections"] == {}, stats
        assert not any(k.startswith("status.42") for k in emulator.admin.stats()["counts"])
        rt.close()


def _spec(account: str, token: str, counters: list[int]):  # type: ignore[no-untyped-def]
    from worker.accounts.model import AccountIn, parse

    return parse(AccountIn, {"id": account, "tokens": [{"token": token}], "counters": [{"id": c} for c in counters]})


def test_an_expired_token_is_refreshed(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with running_emulator(step_seconds=0.1, accounts=SEEDS) as emulator:
        issued = emulator.admin.issue_token("acme", refresh=True, client_id="emulator-client")
        settings = account_settings(make_settings, emulator, token_check_interval=0.5)
        with running_worker(settings, tmp_path), running_ingest(settings) as ingest:
            body = {
                "id": "acme",
                "tokens": [{"token": issued["access_token"], "refresh_token": issued["refresh_token"]}],
                "counters": [{"id": 1001}],
            }
            assert admin(ingest, "PUT", "/accounts/acme", body).status_code == 200
            emulator.admin.expire_token(issued["access_token"])  # Metrica answers 403 invalid_token from now on
            submit(settings, 1001, 0, 5)
            wait_for(lambda: len(rows_of(emulator, 1001)) == 5, timeout=90, what="uploads after the refresh")
            shown = admin(ingest, "GET", "/accounts/acme").json()
        assert emulator.admin.stats()["counts"].get("oauth.refresh_token", 0) >= 1
        assert shown["tokens"][0]["fingerprint"] != fingerprint(SecretStr(issued["access_token"]))
        assert issued["access_token"] not in orjson.dumps(shown).decode()


def test_a_refused_token_pauses_only_its_accounts_counters(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with running_emulator(step_seconds=0.1, accounts=SEEDS) as emulator:
        doomed = emulator.admin.issue_token("acme")["access_token"]
        settings = account_settings(make_settings, emulator)
        rt = Runtime(settings)
        rt.accounts.sync([_spec("acme", doomed, [1001, 1002]), _spec("beta", BETA, [2001])])
        emulator.admin.revoke_token(doomed)
        with running_worker(settings, tmp_path), running_ingest(settings) as ingest:
            for counter in (1001, 1002, 2001):
                submit(settings, counter, 0, 5)
            wait_for(lambda: len(rows_of(emulator, 2001)) == 5, timeout=60, what="beta keeps uploading")
            wait_for(lambda: rt.redis.hlen(rt.keys.paused) >= 1, timeout=30, what="acme's token paused")
            metrics = httpx.get(f"{ingest}/metrics", timeout=30).text
        assert rows_of(emulator, 1001) == [] and rows_of(emulator, 1002) == []
        assert set(cast(list[str], rt.redis.hkeys(rt.keys.paused))) == {fingerprint(SecretStr(doomed))}
        assert 'calltrack_account_token_problem{account="acme",state="refused",token="main"} 1.0' in metrics
        assert 'account="beta"' not in metrics.split("calltrack_account_token_problem", 1)[1].split("# HELP", 1)[0]
        code, out = ctl(settings, "accounts", "list")
        assert code == 0, out
        acme_line = next(line for line in out.splitlines() if line.startswith("acme"))
        beta_line = next(line for line in out.splitlines() if line.startswith("beta"))
        assert "main refused" in acme_line and beta_line.rstrip().endswith("ok")
        _, out = ctl(settings, "doctor")
        assert "account acme" in out and "refused" in out and doomed not in out
        rt.close()


def test_a_counters_own_flush_age_seals_its_batches(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with running_emulator(step_seconds=0.1, accounts=SEEDS) as emulator:
        settings = account_settings(make_settings, emulator, flush_max_age=60)
        rt = Runtime(settings)
        body = {"id": "acme", "tokens": [{"token": ACME}], "counters": [{"id": 1001, "flush_age": 0.5}, {"id": 1002}]}
        assert ctl(settings, "accounts", "sync", "-", stdin=orjson.dumps({"accounts": [body]}).decode())[0] == 0
        with running_worker(settings, tmp_path):
            submit(settings, 1001, 0, 5)
            submit(settings, 1002, 0, 5)
            wait_for(lambda: len(rows_of(emulator, 1001)) == 5, timeout=30, what="1001 sealed by its own 0.5 s")
            assert rows_of(emulator, 1002) == []  # the deployment's 60 s: still buffered
            due = [
                b
                for shard in range(settings.shards)
                for b in cast(list[str], rt.redis.zrange(rt.keys.due(shard), 0, -1))
            ]
            assert any(b.startswith("1002:") for b in due) and not any(b.startswith("1001:") for b in due)
        rt.close()
