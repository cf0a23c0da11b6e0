"""``python -m tests.chaos --calls 100000 [--scenario all]``: the full chaos run; prints the counts,
exits 1 unless exact. Scenarios (tests/chaos/redis_faults.py): kills (the default: worker kills at
every failpoint, Redis SIGKILLed on AOF always), aof_tail (a), snapshot (b: a settled backup, then
snapshot_unsettled: one taken with work in flight), maxmemory (c), forget (d); upgrade: the previous
release (tests/upgrade/PREVIOUS_RELEASE) with work at every stage, then this one (tests/upgrade/run.py;
--calls spread over its stages)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.chaos.harness import run_chaos
from tests.chaos.redis_faults import SCENARIOS


def main() -> int:
    parser = argparse.ArgumentParser(prog="./scripts/chaos", description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--redis-restarts", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--logs", type=Path, default=Path("var/chaos"))
    parser.add_argument(
        "--scenario", default="kills", help=f"one of {', '.join(SCENARIOS)}, a comma-separated list, or all"
    )
    args = parser.parse_args()
    scenarios = (*SCENARIOS, "upgrade") if args.scenario == "all" else tuple(args.scenario.split(","))
    if "snapshot" in scenarios and "snapshot_unsettled" not in scenarios:  # (b) includes an unsettled backup
        scenarios = tuple(x for s in scenarios for x in ((s, "snapshot_unsettled") if s == "snapshot" else (s,)))
    exact = True
    for scenario in scenarios:
        print(f"--- scenario {scenario}", flush=True)
        if scenario == "upgrade":
            exact &= _upgrade(args.calls, args.timeout, args.logs / scenario)
            continue
        report = run_chaos(
            calls=args.calls,
            workers=args.workers,
            redis_restarts=args.redis_restarts,
            batch_rows=max(300, args.calls // 300),
            chunk=1000,
            timeout=args.timeout,
            log_dir=args.logs / scenario,
            scenario=scenario,
            say=lambda text: print(text, flush=True),
        )
        print(report.table())
        if report.exact and scenario == "snapshot_unsettled":
            print("EXACT: nothing doubled while held; once confirmed, at most the forgotten uploads' rows; no batch on "
                  "another's upload, every call Redis still held stored once")  # fmt: skip
        elif report.exact:
            print("EXACT: nothing doubled, no batch on another's upload, every call Redis still held stored once")
        else:
            print("NOT EXACT")
        for why in report.unproven():
            print(f"PROVES LESS: {why}")
        exact &= report.exact and not report.unproven()
    return 0 if exact else 1


def _upgrade(calls: int, timeout: float, log_dir: Path) -> bool:
    """The upgrade scenario on the configured Redis (REDIS_URL), in a namespace of its own, deleted after."""
    import os
    import secrets

    from redis import Redis

    from tests.upgrade.run import STAGES, run_upgrade

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    namespace = f"upgrade{secrets.token_hex(4)}"
    try:
        report = run_upgrade(
            url, namespace, log_dir, per_stage=max(calls // len(STAGES), 10), timeout=timeout,
            say=lambda text: print(text, flush=True),
        )  # fmt: skip
    finally:
        client = Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()
    print(report.table())
    good = (
        report.lost == 0 and report.doubled == 0 and report.killed_mid_upload
        and report.side_by_side_refused and report.rollback_refused
    )  # fmt: skip
    print(
        "EXACT: nothing lost or doubled across the upgrade; side by side and rollback refused" if good else "NOT EXACT"
    )
    return good


if __name__ == "__main__":
    sys.exit(main())
