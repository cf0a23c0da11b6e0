"""Data quality: phone numbers read with numbering plans, late calls kept per the policy, never a 4xx."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import ValidationError

from config.settings import Settings
from tests.helpers import make_call, wait_for
from tests.ingest_helpers import STATIC, add_routes, held_calls, ingest_settings, recent, service, stored_rows
from tests.pipeline import running_emulator, running_ingest, running_worker
from worker.model.calls import CallEvent, field_errors
from worker.model.phones import PhoneRegions, normalize_phone
from worker.ops import scrape
from worker.runtime import Runtime


@pytest.mark.parametrize(
    ("text", "region", "expected"),
    [
        ("8 (912) 345-67-89", "RU", "+79123456789"),
        ("9123456789", "RU", "+79123456789"),
        ("79123456789", "RU", "+79123456789"),
        ("+7 912 345-67-89", "RU", "+79123456789"),
        ("+7 912 345-67-89", None, "+79123456789"),
        ("0044 20 7946 0958", "RU", "+442079460958"),
        ("12025550123", "RU", "+12025550123"),  # not a Russian number: read as international
        ("8 (7172) 55-12-34", "KZ", "+77172551234"),
        ("12-34", "RU", None),
        ("+7 912 abc", "RU", None),
        ("101", "RU", None),
    ],
)
def test_numbering_plans(text: str, region: str | None, expected: str | None) -> None:
    assert normalize_phone(text, region) == expected


def test_phone_number_uses_the_counters_plan_and_names_the_rule() -> None:
    regions = PhoneRegions("RU", {202: "KZ"})
    call = make_call(101, 1, PhoneNumber="8 (912) 345-67-89")
    assert CallEvent.model_validate(call, context=regions.context()).phone_number == "+79123456789"
    kz = make_call(202, 1, PhoneNumber="8 (7172) 55-12-34")
    assert CallEvent.model_validate(kz, context=regions.context()).phone_number == "+77172551234"
    with pytest.raises(ValidationError) as caught:
        CallEvent.model_validate(make_call(101, 2, PhoneNumber="12-34"), context=regions.context())
    (error,) = field_errors(caught.value)
    assert (error.field, error.rule) == ("PhoneNumber", "phone_number")
    assert "national number of RU" in error.message


def test_producer_reads_national_forms_with_the_settings_plan(make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings(phone_region="RU", phone_regions={202: "KZ"}))
    try:
        result = rt.producer.submit(
            [make_call(101, 1, PhoneNumber="8 (912) 345-67-89"), make_call(202, 2, PhoneNumber="87172551234")]
        )
        assert len(result.accepted) == 2
        assert sorted(row["PhoneNumber"] for row in stored_rows(rt)) == ["+77172551234", "+79123456789"]
    finally:
        rt.close()


def test_phone_region_settings_name_the_rule(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValidationError, match="not a region with a numbering plan"):
        make_settings(phone_region="XX")
    with pytest.raises(ValidationError, match="counter=region pairs"):
        make_settings(phone_regions="101")
    assert make_settings(phone_region="").phone_region is None
    assert make_settings(phone_regions="101=kz").phone_regions == {101: "KZ"}


def _old_call(call_id: str, days: int = 30, caller: str | None = None) -> dict[str, Any]:
    call = {"call_id": call_id, "to": STATIC, "start": recent(days * 86_400), "ClientId": "1556"}
    return {**call, "from": caller} if caller else call


@pytest.mark.parametrize("policy", ["hold", "drop", "static"])
def test_a_late_call_is_never_a_4xx(make_settings: Callable[..., Settings], policy: str) -> None:
    with service(ingest_settings(make_settings, late_calls=policy)) as (client, rt):
        answer = client.post("/v1/calls", json=_old_call("late-1"))
        assert answer.status_code == 200
        held = [reason for reason, _ in held_calls(rt)]
        rows = stored_rows(rt)
        if policy == "hold":
            assert answer.json() == {"status": "held", "reason": "too_old"}
            assert held == ["too_old"] and rows == []
        elif policy == "drop":
            assert answer.json()["status"] == "ignored" and answer.json()["reason"].startswith("too_old")
            assert held == [] and rows == []
            rt.metrics.flush()
            assert rt.metrics.read().get("calls_dropped_late|generic") == 1
        else:
            assert answer.json() == {"status": "accepted"}
            assert held == [] and [row["StaticCall"] for row in rows] == ["1"]
        # A call inside the window is untouched by the policy.
        assert client.post("/v1/calls", json=_old_call("fresh-1", days=1)).json() == {"status": "accepted"}


def test_late_static_calls_and_national_numbers_reach_metrica(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Through the real pipeline: a 30-day-old call goes out as a static call, the national caller
    number arrives in E.164, a late call under ``hold`` waits in the held stream."""
    with running_emulator(step_seconds=0.1) as emulator:
        settings = ingest_settings(
            make_settings, metrica_base_url=emulator.base_url, late_calls="static", http_write_timeout=5
        )
        rt = Runtime(settings)
        add_routes(rt)
        with running_worker(settings, tmp_path), running_ingest(settings) as url:
            late = httpx.post(f"{url}/v1/calls", json=_old_call("late-2", caller="8 (912) 345-67-89"))
            fresh = httpx.post(f"{url}/v1/calls", json=_old_call("fresh-2", days=1, caller="9161234567"))
            assert late.json() == fresh.json() == {"status": "accepted"}
            rows = wait_for(
                lambda: (found := emulator.admin.rows(counter=101)) and len(found) == 2 and found,
                timeout=60,
                what="both calls at the emulator",
            )
        by_phone = {row["PhoneNumber"]: row for row in rows}
        assert set(by_phone) == {"+79123456789", "+79161234567"}
        assert by_phone["+79123456789"]["StaticCall"] == "1"
        rt.close()


def test_rows_metrica_refused_show_in_ctl_uploads_and_metrics(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from ctl.__main__ import main as ctl_main
    from ctl.context import Context

    with running_emulator(step_seconds=0.1) as emulator:
        emulator.admin.rules(join_rules=True)
        calls = [make_call(101, n, StaticCall=0) for n in range(4)]
        emulator.admin.set_known_visitors([calls[0]["ClientId"], calls[1]["ClientId"]])  # two of four join
        settings = make_settings(metrica_base_url=emulator.base_url)
        with running_worker(settings, tmp_path) as app:
            rt = app.runtime()
            assert len(Runtime(settings).producer.submit(calls).accepted) == 4
            wait_for(
                lambda: rt.metrics.read().get("rows_refused|calls|101") == 2,
                timeout=60,
                what="the final upload's refused rows counted",
            )
        result = CliRunner().invoke(ctl_main, ["uploads", "101", "--json"], obj=Context(settings))
        (batch,) = orjson.loads(result.stdout)
        assert (batch["source_quantity"], batch["line_quantity"], batch["rejected_lines"]) == ("4", "2", "2")
        table = CliRunner().invoke(ctl_main, ["uploads", "101"], obj=Context(settings)).stdout
        assert "refused" in table.splitlines()[0]
        scraped = scrape.render(scrape.registry(rt.redis, rt.keys, settings)).decode()
        assert 'calltrack_rows_refused_total{counter_id="101",kind="calls"} 2.0' in scraped


def test_a_backfill_says_which_rows_fall_outside_the_join_window(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from ctl.__main__ import main as ctl_main
    from ctl.context import Context

    settings = ingest_settings(make_settings)
    rt = Runtime(settings)
    add_routes(rt)
    backfill = tmp_path / "backfill.ndjson"
    old_producer_form = make_call(101, 7, DateTime=recent(40 * 86_400))
    lines = [_old_call("bf-old"), _old_call("bf-fresh", days=2), old_producer_form]
    backfill.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    result = CliRunner().invoke(ctl_main, ["replay-calls", str(backfill), "--json"], obj=Context(settings))
    report = orjson.loads(result.stdout)
    assert (report["accepted"], report["held"], report["rejected"], report["outside_join_window"]) == (1, 1, 1, 2)
    assert sorted(p["line"] for p in report["problems"]) == [1, 3]
    rt.close()
