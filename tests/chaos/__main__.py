"""``python -m tests.chaos --calls 100000``: the full chaos run; prints the counts, exits 1 unless exact."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.chaos.harness import run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(prog="./scripts/chaos", description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--redis-restarts", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--logs", type=Path, default=Path("var/chaos"))
    args = parser.parse_args()
    report = run_chaos(
        calls=args.calls,
        workers=args.workers,
        redis_restarts=args.redis_restarts,
        batch_rows=max(300, args.calls // 300),
        chunk=1000,
        timeout=args.timeout,
        log_dir=args.logs,
        say=lambda text: print(text, flush=True),
    )
    print(report.table())
    print("EXACT: every accepted call stored exactly once" if report.exact else "NOT EXACT")
    return 0 if report.exact else 1


if __name__ == "__main__":
    sys.exit(main())
