"""A client's token that cannot be read is never replaced by another (issue 22, item 4), and tokens given in
the environment count their quota under their Yandex login with or without a key ring (item 7).

The registry against the real Redis; the pipeline tests on real parts: Redis, a Celery worker and beat,
the ingestion service and the Metrica emulator over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import httpx
import orjson
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from structlog.testing import capture_logs

from config.settings import Settings
from emulator.config import Account
from emulator.server import RunningEmulator
from ingest.console import pages
from tests.accounts_helpers import SECRET_KEY, account_settings, ctl
from tests.helpers import make_call, wait_for
from tests.pipeline import running_emulator, running_ingest, running_worker
from worker.accounts.envimport import learn_env_logins, start
from worker.accounts.model import AccountIn, parse
from worker.accounts.reading import DAMAGED, NO_KEY_RING, WRONG_KEY
from worker.accounts.upkeep import upkeep
from worker.dataplane.ids import fingerprint
from worker.errors import TokenUnreadableError
from worker.ops.quotas import quota_view
from worker.runtime import Runtime

ACME = "AQAAAAAacmeSeedToken000000000000001"
DEFAULT = "AQAAAAAdeploymentDefaultToken00000009"
SEEDS = (Account(ACME, "acme"), Account(DEFAULT, "deployment"))


def acme(counters: tuple[int, ...] = (1001,)) -> AccountIn:
    return parse(AccountIn, {"id": "acme", "tokens": [{"token": ACME}], "counters": [{"id": c} for c in counters]})


def settings_pair(make_settings: Callable[..., Settings], **extra: object) -> tuple[Settings, Settings]:
    """The same deployment with its key ring, and after losing it (CALLTRACK_SECRET_KEYS empty)."""
    keyed = make_settings(secret_keys=SECRET_KEY, metrica_token=DEFAULT, accounts_cache_seconds=0, **extra)
    lost = make_settings(secret_keys="", metrica_token=DEFAULT, accounts_cache_seconds=0, **extra)
    return keyed, lost


# --- the registry ------------------------------------------------------------------------------


def test_an_unreadable_account_never_falls_back_to_the_default_token(make_settings: Callable[..., Settings]) -> None:
    keyed, lost = settings_pair(make_settings)
    Runtime(keyed).accounts.put(acme())
    wrong = make_settings(secret_keys=Fernet.generate_key().decode(), metrica_token=DEFAULT, accounts_cache_seconds=0)
    for settings, reason in ((lost, NO_KEY_RING), (wrong, WRONG_KEY)):
        reg = Runtime(settings).accounts
        with pytest.raises(TokenUnreadableError) as caught:
            reg.token_for(1001)
        assert reason in str(caught.value) and "acme" in str(caught.value)
        assert ACME not in str(caught.value) and DEFAULT not in str(caught.value)
        assert reg.token_for(1001, removed_ok=True) is None  # status, reconcile, replay: nothing either
        assert reg.token_for(4242) == SecretStr(DEFAULT)  # a counter in no account keeps the default
        assert [(u.account, u.reason, u.counters) for u in reg.unreadable()] == [("acme", reason, (1001,))]
    assert Runtime(keyed).accounts.token_for(1001) == SecretStr(ACME)


def test_a_damaged_document_keeps_its_counters_waiting(make_settings: Callable[..., Settings]) -> None:
    keyed, _ = settings_pair(make_settings)
    rt = Runtime(keyed)
    rt.accounts.put(acme())
    rt.redis.hset(rt.keys.accounts, "broken", "{not json")
    rt.redis.hset(rt.keys.account_counters, "7007", "broken")
    rt.redis.incr(rt.keys.accounts_version)
    with pytest.raises(TokenUnreadableError, match=DAMAGED):
        rt.accounts.token_for(7007)
    assert rt.accounts.token_for(1001) == SecretStr(ACME)  # the other accounts are read as before


def test_the_env_account_falls_back_only_to_the_counters_own_variable(make_settings: Callable[..., Settings]) -> None:
    env = {"metrica_counter_tokens": {3001: "env-counter-token"}}
    keyed = make_settings(secret_keys=SECRET_KEY, accounts_cache_seconds=0, metrica_token=DEFAULT, **env)
    lost = make_settings(accounts_cache_seconds=0, metrica_token=DEFAULT, **env)
    reg = Runtime(keyed).accounts
    reg._learn_login = lambda token: None
    start(reg, keyed)
    reg.put(acme())
    lost_reg = Runtime(lost).accounts
    assert lost_reg.token_for(3001) == SecretStr("env-counter-token")  # the very token the env account holds
    with pytest.raises(TokenUnreadableError):
        lost_reg.token_for(1001)


def test_start_names_the_unreadable_accounts_in_one_error_line(make_settings: Callable[..., Settings]) -> None:
    keyed, lost = settings_pair(make_settings)
    Runtime(keyed).accounts.put(acme())
    reg = Runtime(lost).accounts
    reg._learn_login = lambda token: None
    with capture_logs() as events:
        start(reg, lost)
    errors = [e for e in events if e["log_level"] == "error"]
    assert len(errors) == 1 and errors[0]["event"] == "accounts_unreadable"
    assert errors[0]["accounts"] == ["acme"] and errors[0]["reasons"] == [NO_KEY_RING]
    assert ACME not in repr(events) and DEFAULT not in repr(events) and SECRET_KEY not in repr(events)


# --- the pipeline ------------------------------------------------------------------------------


def uploads_of(emulator: RunningEmulator, counter: int) -> list[dict[str, object]]:
    return cast(list[dict[str, object]], emulator.admin.uploads(counter=counter, with_rows=False))


def parked_batch(rt: Runtime, counter: int) -> str | None:
    for shard in range(rt.keys.shards):
        for batch_id in cast(list[str], rt.redis.zrange(rt.keys.sealed(shard), 0, -1)):
            bucket, reason = rt.redis.hmget(rt.keys.batch(batch_id), ["bucket", "parked_reason"])
            if str(bucket).startswith(f"{counter}:") and reason == "token_unreadable":
                return batch_id
    return None


def test_a_lost_key_ring_parks_a_clients_batches_until_it_is_fixed(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with running_emulator(step_seconds=0.1, accounts=SEEDS) as emulator:
        keyed = account_settings(
            make_settings,
            emulator,
            metrica_token=DEFAULT,
            oauth_base_url=emulator.base_url,
            oauth_info_url=f"{emulator.base_url}/info",
        )
        lost = account_settings(
            make_settings,
            emulator,
            metrica_token=DEFAULT,
            oauth_base_url=emulator.base_url,
            oauth_info_url=f"{emulator.base_url}/info",
            secret_keys="",
        )
        rt = Runtime(lost)
        Runtime(keyed).accounts.put(acme())
        with running_ingest(lost) as ingest:
            with running_worker(lost, tmp_path):
                for counter in (1001, 4242):
                    assert len(rt.producer.submit([make_call(counter, n) for n in range(5)]).accepted) == 5
                wait_for(lambda: len(emulator.admin.rows(counter=4242)) == 5, timeout=60, what="4242 by default")
                batch_id = wait_for(lambda: parked_batch(rt, 1001), timeout=60, what="1001's batch parked")
                time.sleep(2)  # more drains and sweeps: nothing of 1001 leaves
            assert uploads_of(emulator, 1001) == []  # above all not under the default token
            assert {u["login"] for u in uploads_of(emulator, 4242)} == {"deployment"}
            assert rt.redis.hget(rt.keys.batch(batch_id), "state") == "SEALED"
            # What an operator sees (the worker is stopped so that its log lines stay out of ctl's output).
            code, out = ctl(lost, "status", "1001", "--json")
            assert code == 0 and orjson.loads(out)[0]["waiting"] == ["token_unreadable"], out
            code, out = ctl(lost, "accounts", "list", "--json")
            assert orjson.loads(out)["unreadable"] == [
                {"id": "acme", "name": "", "reason": NO_KEY_RING, "counters": [1001]}
            ], out
            code, out = ctl(lost, "doctor")
            assert code != 0 and "account acme" in out and NO_KEY_RING in out, out
            metrics = httpx.get(f"{ingest}/metrics", timeout=30).text
            assert 'calltrack_parked_batches{reason="token_unreadable"} 1.0' in metrics
            assert 'calltrack_account_unreadable{account="acme"} 1.0' in metrics
            row = next(r for r in pages.counters(rt, "health")["rows"] if r["counter_id"] == 1001)
            assert row["token"] == "unreadable"  # the console's counters page
            assert ACME not in out + metrics
        # The key ring is back: the waiting batch goes out once, with its own account's token.
        with running_worker(keyed, tmp_path):
            wait_for(lambda: len(emulator.admin.rows(counter=1001)) == 5, timeout=60, what="1001 after the fix")
            time.sleep(2)  # a second upload would show up now
        assert [u["login"] for u in uploads_of(emulator, 1001)] == ["acme"]
        assert len(emulator.admin.rows(counter=1001)) == 5
        assert rt.redis.hget(rt.keys.batch(batch_id), "state") in ("UPLOADED", "PROCESSED")
        rt.close()


def test_two_environment_tokens_of_one_login_share_one_quota_without_a_key_ring(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with running_emulator(step_seconds=0.1, accounts=SEEDS) as emulator:
        one = emulator.admin.issue_token("acme")["access_token"]
        two = emulator.admin.issue_token("acme")["access_token"]
        settings = make_settings(
            metrica_base_url=emulator.base_url,
            oauth_base_url=emulator.base_url,
            oauth_info_url=f"{emulator.base_url}/info",
            metrica_counter_tokens={5001: one, 5002: two},
            accounts_cache_seconds=0.2,
        )
        assert not settings.secret_keys
        rt = Runtime(settings)
        # The ingestion service learns the logins at its start (a worker does too, on worker_ready).
        with running_ingest(settings), running_worker(settings, tmp_path):
            wait_for(lambda: rt.accounts.login_of(SecretStr(one)) == "login.acme", timeout=30, what="login learned")
            for counter in (5001, 5002):
                assert len(rt.producer.submit([make_call(counter, n) for n in range(3)]).accepted) == 3
            wait_for(lambda: emulator.admin.stats()["rows"] == 6, timeout=60, what="both counters at Metrica")
        assert rt.accounts.login_of(SecretStr(one)) == rt.accounts.login_of(SecretStr(two)) == "login.acme"
        day = datetime.now(UTC).strftime("%Y%m%d")
        assert int(rt.redis.get(rt.keys.quota_day("login.acme", day)) or 0) >= 2  # both uploads counted here
        for token in (one, two):
            assert not rt.redis.exists(rt.keys.quota_day(fingerprint(SecretStr(token)), day))
        assert [q.login for q in quota_view(rt.redis, rt.keys, settings)] == ["login.acme"]
        assert learn_env_logins(rt.accounts, settings) == 0  # learned once: no second user-info request
        assert one not in repr(rt.redis.hgetall(rt.keys.token_logins))
        rt.close()


def test_upkeep_learns_a_login_missed_at_start_and_passes_over_unreadable_accounts(
    make_settings: Callable[..., Settings],
) -> None:
    with running_emulator(step_seconds=0.1, accounts=SEEDS) as emulator:
        urls = {"metrica_base_url": emulator.base_url, "oauth_info_url": f"{emulator.base_url}/info"}
        keyed, lost = settings_pair(make_settings, **urls)
        Runtime(keyed).accounts.put(acme())
        reg = Runtime(lost).accounts
        assert reg.login_of(SecretStr(DEFAULT)) == fingerprint(SecretStr(DEFAULT))  # not learned yet
        assert upkeep(reg).failed == 0  # the unreadable account is no error here: its batches wait
        assert reg.login_of(SecretStr(DEFAULT)) == "login.deployment"
