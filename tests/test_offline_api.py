"""Metrica's whole offline-data API against the emulator: counter setup before the first upload, calls,
conversions and chats of one counter as three kinds, each on its documented endpoints (or calls and
conversions on the unified one, by a setting)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from config.settings import Settings
from ctl.__main__ import main as ctl_main
from ctl.context import Context
from tests.helpers import make_call, wait_for
from tests.pipeline import running_emulator, running_ingest, running_worker
from worker.delivery.counter_setup import readiness, setup_counter
from worker.model.chats import ChatEvent
from worker.model.fields import field_errors
from worker.model.kinds import UploadKind
from worker.ops import scrape
from worker.runtime import Runtime

#: The options uploads of calls and conversions need (offline visits are another product).
NEEDED = {"offline_calls_extended_threshold": 1, "offline_conversion_extended_threshold": 1}


def _ago(seconds: int) -> int:
    return int(datetime.now(UTC).timestamp()) - seconds


def make_conversion(counter: int, n: int, target: str = "order_paid") -> dict[str, Any]:
    return {"counter_id": counter, "conversion_id": f"order-{n}", "source": "shop", "ClientId": str(10**15 + n),
            "Target": target, "DateTime": _ago(3600 + n), "Price": "10.50", "Currency": "RUB"}  # fmt: skip


def make_chat(counter: int, n: int) -> dict[str, Any]:
    return {"counter_id": counter, "chat_id": f"chat-{n}", "source": "tracker", "DateTime": _ago(1800 + n),
            "ChatPlatform": "Telegram", "ChatUsername": f"@user{n}", "ClientID": str(10**15 + n),
            "Answered": n % 2}  # fmt: skip


def test_the_chat_model_names_field_and_rule() -> None:
    chat = ChatEvent.model_validate(make_chat(101, 1))
    assert chat.to_row() == {
        "DateTime": str(make_chat(101, 1)["DateTime"]),
        "ChatPlatform": "telegram",
        "ClientID": str(10**15 + 1),
        "ChatUsername": "@user1",
        "Answered": "1",
    }
    bad = {**make_chat(101, 2), "ChatPlatform": "icq", "ChatUsername": None}
    with pytest.raises(ValueError) as caught:
        ChatEvent.model_validate(bad)
    rules = {(e.field, e.rule) for e in field_errors(caught.value)}  # type: ignore[arg-type]
    assert ("ChatPlatform", "value_error") in rules
    unattributed = {k: v for k, v in make_chat(101, 3).items() if k != "ClientID"}
    assert ChatEvent.model_validate(unattributed).client_id is None  # no visitor id: stored unattributed


def test_three_kinds_of_one_counter_each_once_after_the_counter_is_set_up(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with running_emulator(step_seconds=0.1) as emulator:
        # Join rules on: a conversion whose Target has no goal is never joined (LINKAGE_FAILURE), so
        # PROCESSED conversions show the goal existed before the file arrived.
        emulator.admin.rules(join_rules=True)
        assert not any(emulator.admin.counter(101)["offline_options"].values())
        settings = make_settings(metrica_base_url=emulator.base_url, flush_max_rows=1000, ingest_counters=[101])
        with running_worker(settings, tmp_path) as app, running_ingest(settings) as url:
            rt = app.runtime()
            producer = Runtime(settings).producer
            assert len(producer.submit([make_call(101, n, StaticCall=0) for n in range(5)]).accepted) == 5
            assert len(producer.submit([make_conversion(101, n) for n in range(4)], UploadKind.CONVERSIONS).accepted)
            one = httpx.post(f"{url}/v1/chats", json=make_chat(101, 0))
            assert one.json() == {"status": "accepted", "chat_id": "chat-0"}
            lines = b"\n".join(orjson.dumps(make_chat(101, n)) for n in range(0, 3))  # chat-0 again: a repeat
            bulk = httpx.post(f"{url}/v1/chats/bulk", content=lines).json()
            assert bulk["accepted"] == 3 and bulk["rejected"] == 0
            wait_for(
                lambda: (
                    {u["status"] for u in emulator.admin.uploads(counter=101, with_rows=False)} == {"PROCESSED"}
                    and len(emulator.admin.uploads(counter=101, with_rows=False)) == 3
                ),
                timeout=60,
                what="three uploads PROCESSED",
            )
            ready = readiness(rt, [101])[101]
        uploads = emulator.admin.uploads(counter=101)
        assert sorted(u["type"] for u in uploads) == ["BASIC", "CALLS", "CHATS"]
        rows = {u["type"]: u["rows"] for u in uploads}
        assert len(rows["CALLS"]) == 5 and len(rows["BASIC"]) == 4 and len(rows["CHATS"]) == 3  # each once
        assert sorted(r["ChatUsername"] for r in rows["CHATS"]) == ["@user0", "@user1", "@user2"]
        counter = emulator.admin.counter(101)
        assert counter["offline_options"] | NEEDED == counter["offline_options"]
        assert [g["conditions"][0]["url"] for g in counter["goals"] if g["type"] == "action"] == ["order_paid"]
        assert (
            ready.ready and ready.goals_created == ["order_paid"] and set(ready.join_from) == {"calls", "conversions"}
        )
        counts = emulator.admin.stats()["counts"]
        # Each kind on the endpoints its pages document: calls on upload_calls, conversions and chats on upload.
        assert counts["path.upload_calls"] == 1 and counts["path.upload"] == 2
        scraped = scrape.render(scrape.registry(rt.redis, rt.keys, settings)).decode()
        assert 'calltrack_counter_ready{counter_id="101"} 1.0' in scraped


def test_the_unified_endpoint_only_with_the_setting(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    # type=CALLS is undocumented: the strict emulator refuses it, so this opt-in runs against the lenient one.
    with running_emulator(step_seconds=0.1, strict=False) as emulator:
        settings = make_settings(metrica_base_url=emulator.base_url, metrica_unified_endpoint=True)
        with running_worker(settings, tmp_path):
            producer = Runtime(settings).producer
            producer.submit([make_call(202, n) for n in range(3)])
            producer.submit([make_conversion(202, n) for n in range(2)], UploadKind.CONVERSIONS)
            wait_for(
                lambda: (
                    len(emulator.admin.uploads(counter=202, with_rows=False)) == 2
                    and {u["status"] for u in emulator.admin.uploads(counter=202, with_rows=False)} == {"PROCESSED"}
                ),
                timeout=60,
                what="two uploads PROCESSED",
            )
        counts = emulator.admin.stats()["counts"]
        assert counts["path.upload"] == 2 and "path.upload_calls" not in counts
        assert "path.calls_uploadings" not in counts
        assert sorted(u["type"] for u in emulator.admin.uploads(counter=202, with_rows=False)) == ["BASIC", "CALLS"]


def test_ctl_counters_setup_checks_or_applies(make_settings: Callable[..., Settings]) -> None:
    with running_emulator() as emulator:
        settings = make_settings(metrica_base_url=emulator.base_url)
        ctx = Context(settings)
        checked = CliRunner().invoke(ctl_main, ["counters", "setup", "303", "--check", "--target", "lead", "--json"],
                                     obj=ctx)  # fmt: skip
        assert checked.exit_code == 1
        (report,) = orjson.loads(checked.stdout)
        assert report["ready"] is False and report["missing_goals"] == ["lead"] and not report["switched_on"]
        assert not any(emulator.admin.counter(303)["offline_options"].values())  # --check changed nothing
        applied = CliRunner().invoke(ctl_main, ["counters", "setup", "303", "--target", "lead"], obj=Context(settings))
        assert applied.exit_code == 0 and "303" in applied.stdout and "yes" in applied.stdout
        options = emulator.admin.counter(303)["offline_options"]
        assert options | NEEDED == options
        again = setup_counter(Runtime(settings), 303, ["lead"])  # nothing left to do: no second goal
        assert again.ready and again.goals_created == [] and again.switched_on == []
        assert len([g for g in emulator.admin.counter(303)["goals"] if g["type"] == "action"]) == 1
        CliRunner().invoke(ctl_main, ["routing", "add", "+74957770003", "303"], obj=Context(settings))
        doctor = CliRunner().invoke(ctl_main, ["doctor", "--json"], obj=Context(settings))
        names = {c["name"]: c for c in orjson.loads(doctor.stdout)["checks"]}
        assert names["counter 303 setup"]["status"] == "ok" and "join from" in names["counter 303 setup"]["detail"]
