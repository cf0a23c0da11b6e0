"""Issue 23: the previous release (tests/upgrade/PREVIOUS_RELEASE) with work at every stage, then this
release takes over and the provider retries every call: 0 lost, 0 doubled; a rollback is refused."""

from __future__ import annotations

from pathlib import Path

from tests.upgrade.run import STAGES, run_upgrade


def test_an_upgrade_with_work_at_every_stage_loses_and_doubles_nothing(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    report = run_upgrade(redis_url, namespace, tmp_path / "logs", per_stage=30)
    print(report.table())
    assert set(report.per_stage) == {*STAGES, "held"} and report.per_stage["held"] > 0
    # Every stage still held work when this release took over.
    assert report.at_takeover["calls in a stream"] > 0 and report.at_takeover["open buffers"] > 0
    assert {"batches SEALED", "batches UPLOADING", "batches UPLOADED"} <= set(report.at_takeover)
    assert report.held_replayed == report.held_retries_sent == report.per_stage["held"]
    assert report.killed_mid_upload  # the old uploader died inside its request
    assert report.side_by_side_refused, report.side_by_side_line
    assert "older release are alive" in report.side_by_side_line and report.format_while_old_alive == 2
    assert report.format_before == 2 and report.format_after == 3
    assert report.lost == 0 and report.doubled == 0
    assert report.stored_rows == report.calls
    assert report.rollback_refused, report.rollback_line
