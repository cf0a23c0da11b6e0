"""``python -m tests.chaos --calls 100000 [--scenario all]``: the full chaos run; prints the counts,
exits 1 unless exact. Scenarios (tests/chaos/redis_faults.py): kills (the default: worker kills at
every failpoint, Redis SIGKILLed on AOF always), aof_tail (a), snapshot (b: a settled backup, then
snapshot_unsettled: one taken with work in flight), maxmemory (c), forget (d)."""

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
    scenarios = SCENARIOS if args.scenario == "all" else tuple(args.scenario.split(","))
    if "snapshot" in scenarios and "snapshot_unsettled" not in scenarios:  # (b) includes an unsettled backup
        scenarios = tuple(x for s in scenarios for x in ((s, "snapshot_unsettled") if s == "snapshot" else (s,)))
    exact = True
    for scenario in scenarios:
        print(f"--- scenario {scenario}", flush=True)
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


if __name__ == "__main__":
    sys.exit(main())
