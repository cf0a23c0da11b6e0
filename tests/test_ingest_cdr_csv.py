"""The Master.csv importer: quoted fields, unanswered calls, both time settings, a kill halfway, following."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from config.settings import Settings
from ingest.pbx.asterisk import AsteriskConfig
from ingest.pbx.cdr_csv import CdrCsvImporter, split_records
from tests.helpers import wait_for
from tests.ingest_helpers import STATIC, add_routes, ingest_settings, recent, stored_rows
from worker.delivery.drain import drain
from worker.intake.service import build_intake
from worker.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
MOSCOW = ZoneInfo("Europe/Moscow")


def cdr_line(n: int, start: int, zone: tzinfo) -> str:
    """One Master.csv row as Asterisk writes it: strings quoted (inner quotes doubled), numbers bare."""
    answered = n % 4 != 0

    def fmt(t: int) -> str:
        return datetime.fromtimestamp(t, zone).strftime("%Y-%m-%d %H:%M:%S")

    strings = ["", f"7916100{n:04d}", STATIC.lstrip("+"), "from-trunk", f'"Client, ""{n}""" <7916100{n:04d}>',
               f"SIP/trunk-{n:08x}", "SIP/101-00000001", "Dial", "SIP/101,30,tT"]  # fmt: skip
    cells = [f'"{s.replace(chr(34), chr(34) * 2)}"' for s in strings]
    cells += [f'"{fmt(start)}"', f'"{fmt(start + 5)}"' if answered else "", f'"{fmt(start + 65)}"']
    cells += ["65", "60" if answered else "0", '"ANSWERED"' if answered else '"NO ANSWER"', '"DOCUMENTATION"']
    cells += [f'"1715690231.{n}"', f'"ClientId={5000 + n}"']
    return ",".join(cells) + "\n"


def write_master(path: Path, count: int, zone: tzinfo, first: int = 0) -> dict[int, int]:
    starts = {n: recent(7200 + n * 60) for n in range(first, first + count)}
    with path.open("a", encoding="utf-8") as handle:
        for n, start in starts.items():
            handle.write(cdr_line(n, start, zone))
    return starts


def test_split_records_keeps_quoted_newlines_and_leaves_a_partial_line() -> None:
    data = b'"a","multi\nline",1\n"b",2\n"c",3'
    records, used = split_records(data)
    assert records == [b'"a","multi\nline",1\n', b'"b",2\n'] and data[used:] == b'"c",3'
    assert next(csv.reader(io.StringIO(records[0].decode()))) == ["a", "multi\nline", "1"]


@pytest.mark.parametrize("usegmtime", [True, False])
def test_killed_halfway_then_restarted_stores_every_row_once(
    make_settings: Callable[..., Settings], tmp_path: Path, usegmtime: bool
) -> None:
    settings = ingest_settings(make_settings, asterisk_usegmtime=usegmtime, asterisk_timezone="Europe/Moscow")
    rt = Runtime(settings)
    add_routes(rt)
    master = tmp_path / "Master.csv"
    starts = write_master(master, 40, UTC if usegmtime else MOSCOW)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACK_")}
    env.update(
        PYTHONPATH=str(ROOT),
        CALLTRACK_REDIS_URL=settings.redis_url,
        CALLTRACK_NAMESPACE=settings.namespace,
        CALLTRACK_SHARDS=str(settings.shards),
        CALLTRACK_IDENTIFIER_FIELDS=orjson.dumps(settings.identifier_fields).decode(),
        CALLTRACK_ASTERISK_USEGMTIME="true" if usegmtime else "false",
        CALLTRACK_ASTERISK_TIMEZONE="Europe/Moscow",
        CALLTRACK_LOG_FORMAT="json",
    )
    command = [sys.executable, "-m", "ingest.pbx", "csv", str(master), "--batch-rows", "3"]
    kills = 0
    for attempt in range(200):
        # SIGKILL after a stored batch, before its position is saved: surely on the first run, then
        # with probability 0.3 per batch, until a run gets to the end.
        share = "1" if attempt == 0 else "0.3"
        run = subprocess.run(command, env={**env, "CALLTRACK_FAILPOINTS": f"cdr_after_store={share}"},
                             capture_output=True, text=True, check=False)  # fmt: skip
        if run.returncode == 0:
            break
        assert run.returncode == -9, run.stderr
        kills += 1
    else:
        pytest.fail("the importer never finished")
    assert kills > 0
    again = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert again.stdout.startswith("rows 0:")  # a restart after the end re-sends nothing

    rows = stored_rows(rt)
    assert {int(r["ClientId"]) - 5000 for r in rows} == set(range(40))
    result = drain(rt, seal_all=True)
    assert result.read - result.repeats == 40  # repeats only from batches re-sent after a kill
    for row in rows:
        n = int(row["ClientId"]) - 5000
        assert int(row["DateTime"]) == starts[n]
        if n % 4 == 0:
            assert (row["CallMissed"], row["TalkDuration"], row["HoldDuration"]) == ("1", "0", "65")
        else:
            assert (row["CallMissed"], row["TalkDuration"], row["HoldDuration"]) == ("0", "60", "5")
        assert row["PhoneNumber"] == f"+7916100{n:04d}"
    rt.close()


def test_follows_a_growing_file_and_resumes(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = ingest_settings(make_settings)
    rt = Runtime(settings)
    add_routes(rt)
    master = tmp_path / "Master.csv"
    write_master(master, 5, UTC)

    def importer() -> CdrCsvImporter:
        return CdrCsvImporter(master, build_intake(rt), rt.redis, rt.keys, AsteriskConfig.from_settings(settings),
                              settings.cdr_csv_columns, batch_rows=2)  # fmt: skip

    stop = threading.Event()
    thread = threading.Thread(target=importer().run, kwargs={"follow": True, "poll_seconds": 0.05, "stop": stop})
    thread.start()
    try:
        wait_for(lambda: len(stored_rows(rt)) == 5, timeout=20, what="the first rows")
        line = cdr_line(5, recent(100), UTC)
        with master.open("a", encoding="utf-8") as handle:  # half a line first: it waits for the rest
            handle.write(line[:40])
            handle.flush()
            wait_for(lambda: importer().position()[0] > 0, timeout=20, what="a saved position")
            handle.write(line[40:])
        wait_for(lambda: len(stored_rows(rt)) == 6, timeout=20, what="the appended row")
    finally:
        stop.set()
        thread.join()
    write_master(master, 2, UTC, first=6)
    stats = importer().run(follow=False)
    assert (stats.rows, stats.accepted) == (2, 2)
    assert len(stored_rows(rt)) == 8
    master.write_text(cdr_line(9, recent(50), UTC))  # replaced by a shorter file: read from its start
    assert importer().run(follow=False).accepted == 1
    rt.close()


def test_a_bad_row_is_skipped_with_a_reason(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = ingest_settings(make_settings)
    rt = Runtime(settings)
    add_routes(rt)
    master = tmp_path / "Master.csv"
    master.write_text('"only","three","cells"\n' + cdr_line(1, recent(), UTC))
    imp = CdrCsvImporter(master, build_intake(rt), rt.redis, rt.keys, AsteriskConfig.from_settings(settings),
                         settings.cdr_csv_columns)  # fmt: skip
    stats = imp.run(follow=False)
    assert (stats.rows, stats.rejected, stats.accepted) == (2, 1, 1)
    rt.close()
