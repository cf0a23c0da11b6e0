"""The operator CLI's operations commands against a real Redis, a real worker and the emulator:
status, uploads, quarantine list/show/replay/discard (adopting what Metrica holds), replay-calls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import orjson
from click.testing import CliRunner

from config.settings import Settings
from ctl.__main__ import main
from ctl.context import Context
from tests.helpers import make_call, wait_for
from tests.pipeline import running_emulator, running_worker
from worker.dataplane.ids import shard_of_batch
from worker.runtime import Runtime


def run(settings: Settings, *args: str, stdout_only: bool = False) -> tuple[int, str]:
    """Exit code and output: stdout alone on success (or when asked), else stdout and stderr together.

    The worker runs in this process, so its log lines (a task's result dict among them) can land in
    the captured stderr while the command runs: JSON is read from stdout alone.
    """
    result = CliRunner().invoke(main, list(args), obj=Context(settings), catch_exceptions=False)
    return result.exit_code, result.stdout if result.exit_code == 0 or stdout_only else result.output


def run_json(settings: Settings, *args: str) -> Any:
    code, out = run(settings, *args, "--json")
    assert code == 0, out
    return orjson.loads(out)


def states(rt: Runtime, counter: int) -> dict[str, str]:
    found = {}
    for key in rt.redis.scan_iter(match=f"{rt.settings.namespace}:*:batch:*", count=1000):
        record = cast(dict[str, str], rt.redis.hgetall(key))
        if record["bucket"].startswith(f"{counter}:"):
            found[key.rsplit(":", 1)[1]] = record["state"]
    return found


def test_status_uploads_quarantine_and_replay(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with running_emulator(step_seconds=0.1) as emulator:
        settings = make_settings(metrica_base_url=emulator.base_url, flush_max_rows=10, upload_max_retries=1)
        # Metrica refuses the first two files of counter 202 for good: both batches are quarantined.
        emulator.admin.script([400, 400], kind="upload", counter=202)
        with running_worker(settings, tmp_path) as app:
            rt = app.runtime()
            producer = Runtime(settings).producer
            assert len(producer.submit([make_call(101, n) for n in range(20)]).accepted) == 20
            assert len(producer.submit([make_call(202, n) for n in range(20)]).accepted) == 20
            wait_for(
                lambda: (
                    sorted(states(rt, 101).values()) == ["PROCESSED"] * 2
                    and sorted(states(rt, 202).values()) == ["QUARANTINED"] * 2
                ),
                timeout=60,
                what="101 processed, 202 quarantined",
            )

            # status: one row per counter, for people and for scripts
            status = {item["counter_id"]: item for item in run_json(settings, "status")}
            assert status[101]["quarantined"] == 0 and status[101]["last_upload"]["status"] == "PROCESSED"
            assert status[202]["quarantined"] == 2 and status[202]["last_upload"] is None
            assert status[101]["quota_left"] is not None and status[101]["pending_calls"] == 0
            code, out = run(settings, "status", "202")
            assert code == 0 and "quarantined" in out.splitlines()[0] and "202" in out

            history = run_json(settings, "uploads", "101")
            assert [b["status"] for b in history] == ["PROCESSED", "PROCESSED"]
            assert all(b["line_quantity"] == "10" for b in history)

            listed = run_json(settings, "quarantine", "list")
            assert len(listed) == 2 and all("refused" in item["reason"] for item in listed)
            first, second = (item["batch_id"] for item in listed)
            shown = run_json(settings, "quarantine", "show", first, "--rows", "3")
            assert shown["state"] == "QUARANTINED" and len(shown["rows_shown"]) == 3
            code, out = run(settings, "quarantine", "show", first)
            assert code == 0 and "PhoneNumber" in out

            # replay: Metrica does not hold it, so its rows go out again under a new batch id
            uploads_before = len(emulator.admin.uploads(with_rows=False))
            replayed = run_json(settings, "quarantine", "replay", first)["results"]
            assert replayed[0]["action"] == "resubmitted"
            new_id = replayed[0]["new_batch_id"]
            wait_for(lambda: states(rt, 202).get(new_id) == "PROCESSED", timeout=60, what="the replay processed")
            assert states(rt, 202)[first] == "REPLAYED"
            assert rt.redis.hget(rt.keys.batch(first), "replayed_as") == new_id
            assert len(emulator.admin.uploads(with_rows=False)) == uploads_before + 1
            assert len(emulator.admin.rows(counter=202)) == 10
            code, out = run(settings, "quarantine", "replay", first)
            assert code == 1 and "REPLAYED" in out  # not twice

            # discard: who, when, why kept; rows gone
            code, out = run(settings, "quarantine", "discard", second, "--reason", "test data", "--by", "ops", "--yes")
            assert code == 0 and "discarded" in out
            record = cast(dict[str, str], rt.redis.hgetall(rt.keys.batch(second)))
            assert record["state"] == "DISCARDED" and record["discarded_by"] == "ops"
            assert record["discard_reason"] == "test data" and record["discarded_at"]
            assert not rt.redis.exists(rt.keys.rows(second))
            assert run_json(settings, "quarantine", "list") == []

            # A batch quarantined after an unknown outcome that Metrica in fact holds: adopted, not re-sent.
            held_id = history[0]["batch_id"]
            _quarantine_by_hand(rt, held_id)
            uploads_before = len(emulator.admin.uploads(with_rows=False))
            replayed = run_json(settings, "quarantine", "replay", "--all")["results"]
            assert replayed == [
                {
                    "batch_id": held_id,
                    "action": "adopted",
                    "new_batch_id": None,
                    "upload_id": int(history[0]["upload_id"]),
                }
            ]
            wait_for(lambda: states(rt, 101).get(held_id) == "PROCESSED", timeout=60, what="the adopted batch final")
            assert len(emulator.admin.uploads(with_rows=False)) == uploads_before
            assert len(emulator.admin.rows(counter=101)) == 20

            # replay-calls: producer-form and generic lines, one bad line named
            run(settings, "routing", "add", "+74957770001", "303")
            lines = [orjson.dumps(make_call(303, n)).decode() for n in range(3)]
            start = int(make_call(303, 0)["DateTime"])
            lines += [
                orjson.dumps(
                    {"call_id": f"g-{n}", "to": "+74957770001", "start": start, "ClientId": str(900 + n)}
                ).decode()
                for n in range(2)
            ]
            lines.append('{"call_id": "bad", "to": "12"}')
            calls_file = tmp_path / "calls.ndjson"
            calls_file.write_text("\n".join(lines) + "\n")
            code, out = run(settings, "replay-calls", str(calls_file), "--json", stdout_only=True)
            assert code == 1
            report = orjson.loads(out)
            assert report["accepted"] == 5 and report["rejected"] == 1 and report["problems"][0]["line"] == 6
            wait_for(lambda: len(emulator.admin.rows(counter=303)) == 5, timeout=60, what="replayed calls stored")
            code, out = run(settings, "replay-calls", str(calls_file))  # again: repeats are dropped
            assert "5 stored" in out and "line 6" in out
            wait_for(lambda: not rt.redis.xlen(rt.keys.stream(rt.keys.shard_of(303))), timeout=30, what="drained")
            assert len(emulator.admin.rows(counter=303)) == 5


def _quarantine_by_hand(rt: Runtime, batch_id: str) -> None:
    """What give_up leaves when the last attempt's outcome was unknown and the lookup failed."""
    shard = shard_of_batch(batch_id)
    pipe = rt.redis.pipeline(transaction=True)
    pipe.hset(rt.keys.batch(batch_id), mapping={"state": "QUARANTINED", "reason": "gave up; outcome unknown"})
    pipe.hdel(rt.keys.batch(batch_id), "upload_id", "status")
    pipe.zrem(rt.keys.done(shard), batch_id)
    pipe.zadd(rt.keys.quarantine(shard), {batch_id: 1})
    pipe.execute()


def test_every_command_has_help() -> None:
    runner = CliRunner()
    commands = [
        ["status"], ["uploads"], ["quarantine"], ["quarantine", "list"], ["quarantine", "show"],
        ["quarantine", "replay"], ["quarantine", "discard"], ["replay-calls"], ["doctor"], ["routing"], ["held"],
    ]  # fmt: skip
    for args in commands:
        result = runner.invoke(main, [*args, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, args
