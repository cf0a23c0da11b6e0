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
from tests.helpers import make_call, wait_for
from tests.pipeline import running_emulator, running_worker
from worker.delivery import counter_setup
from worker.delivery.counter_setup import CALLS_OPTION, CONVERSIONS_OPTION, Readiness, readiness, setup_counter
from worker.delivery.quota import Purpose, QuotaExhausted, QuotaGate
from worker.errors import JoinWindowClosed
from worker.keys import fingerprint
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
