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
    assert set(report.per_stage) == set(STAGES)
    assert report.killed_mid_upload  # the old uploader died inside its request
    assert report.format_before == 1 and report.format_after == 2
    assert report.lost == 0 and report.doubled == 0
    assert report.stored_rows == report.calls
    assert report.rollback_refused, report.rollback_line
