"""The operator CLI: routing add/remove/list/import, held list/replay, against a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
from click.testing import CliRunner

from config.settings import Settings
from ctl.__main__ import main
from ctl.context import Context
from tests.ingest_helpers import STATIC, held_calls, ingest_settings, recent, service, snapshot, stored_rows

ROOT = Path(__file__).resolve().parent.parent


def run(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), obj=Context(settings), catch_exceptions=False)
    # Logs go to stderr; a command's answer to stdout (errors: to stderr, so look at both then).
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_routing_commands(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = ingest_settings(make_settings)
    assert run(settings, "routing", "add", "+7 (495) 222-00-01", "404", "--kind", "dynamic", "--label", "ads")[0] == 0
    code, out = run(settings, "routing", "add", "12345", "404")
    assert code != 0 and "number" in out
    good = tmp_path / "numbers.csv"
    good.write_text("number,counter_id,kind,label,outgoing\n74952220002,505,static,seo,true\n+74952220003,505,,,\n")
    assert run(settings, "routing", "import", str(good))[0] == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("number,counter_id\n+74952220004,606\n+74952220005,zero\n")
    code, out = run(settings, "routing", "import", str(bad))
    assert code != 0 and "line 3" in out and "counter_id" in out
    code, out = run(settings, "routing", "list", "--json")
    entries = {e["number"]: e for e in orjson.loads(out)}
    assert set(entries) == {"+74952220001", "+74952220002", "+74952220003"}  # nothing of bad.csv
    assert entries["+74952220001"]["kind"] == "dynamic" and entries["+74952220002"]["outgoing"] is True
    assert run(settings, "routing", "remove", "+74952220003")[1].strip() == "removed 1"
    code, out = run(settings, "routing", "list")
    assert code == 0 and "+74952220002" in out and "+74952220003" not in out


def test_held_calls_are_replayed_once_fixed(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings)
    with service(settings) as (client, rt):
        start = recent()
        unknown = {"call_id": "h-1", "to": "+74953330001", "from": "+79160000001", "start": start, "ClientId": "5"}
        no_id = {"call_id": "h-2", "to": STATIC, "from": "+79160000002", "start": start}
        assert client.post("/v1/calls", json=unknown).json()["reason"] == "unknown_number"
        assert client.post("/v1/calls", json=no_id).json()["reason"] == "no_identifier"
        assert client.post("/v1/calls", json=unknown).json()["status"] == "held"  # repeated: not held twice
        assert len(held_calls(rt)) == 2
        code, out = run(settings, "held", "list", "--json")
        listed = orjson.loads(out)
        ids = {item["call"]["call_id"]: item["id"] for item in listed}

        # Nothing fixed yet: replay keeps both, stores nothing.
        before = snapshot(rt)
        code, out = run(settings, "held", "replay", "--all", "--json")
        assert code == 0 and {r["status"] for r in orjson.loads(out)["results"]} == {"held"}
        assert snapshot(rt) == before

        # Fix the routing: the first call goes through; the entry leaves the stream.
        assert run(settings, "routing", "add", "+74953330001", "707")[0] == 0
        code, out = run(settings, "held", "replay", ids["h-1"])
        assert code == 0 and "1 stored" in out
        # An identifier learned for the second call.
        code, out = run(settings, "held", "replay", ids["h-2"], "--client-id", "424242")
        assert code == 0 and "1 stored" in out
        assert held_calls(rt) == []
        rows = {row["ClientId"]: row for row in stored_rows(rt)}
        assert rows["5"]["_bucket"] == "707:calls:CLIENT_ID" and rows["424242"]["_bucket"] == "101:calls:CLIENT_ID"
        assert run(settings, "held", "replay", ids["h-1"])[0] != 0  # gone: named, not found


def test_bad_identifier_is_refused_before_anything(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings)
    code, out = run(settings, "held", "replay", "1-0", "--client-id", "abc")
    assert code != 0 and "digits" in out


def test_help_everywhere_and_the_wrapper(tmp_path: Path) -> None:
    for args in ([], ["routing"], ["routing", "import"], ["held"], ["held", "replay"]):
        result = CliRunner().invoke(main, [*args, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACK_")}
    out = subprocess.run(
        [sys.executable, "-m", "ctl", "--help"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert "routing" in out.stdout and "held" in out.stdout
