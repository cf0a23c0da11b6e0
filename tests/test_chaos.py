"""The chaos suite in its short form (the full run: ./scripts/chaos). Real processes, real SIGKILLs."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.harness import run_chaos


def test_every_accepted_call_is_stored_exactly_once_through_kills_restarts_and_faults(
    redis_url: str, tmp_path: Path
) -> None:
    report = run_chaos(
        calls=2_500, counters=5, workers=2, chunk=250, batch_rows=150, kill_every=6.0,
        redis_restarts=1, timeout=240, log_dir=tmp_path, say=print,
    )  # fmt: skip
    print(report.table())
    assert report.redis_restarts == 1
    assert report.worker_kills + report.failpoint_kills >= 1, "nothing was killed: the run proves nothing"
    assert (report.lost, report.duplicated, report.batches_stored_twice) == (0, 0, 0)
    assert report.stored_rows == report.accepted == 2_500
    assert report.conversions == 500  # the run mixes offline conversions with calls
