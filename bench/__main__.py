"""``python -m bench [--quick]``: the benchmark of issue 7 on this project's real parts.

Starts its own ``redis-server`` (AOF, ``appendfsync everysec``), the Metrica emulator in a child
process, ``celery -A worker.main worker`` processes and beat, and measures:

* end to end: calls/s from the first producer call to the last upload the emulator answered, over 10
  counters and over many (10,000) counters;
* the naive baseline (``bench/naive.py``: one Celery task per call) and the ratio;
* backlog drain: calls enqueued with the fleet stopped, then the fleet started; drain time and the
  peak RSS (VmHWM) of every worker process, for a small and a large backlog;
* enqueue-to-upload-request latency p50/p99 at 20% of the measured 10-counter rate;
* the ingestion service (``python -m ingest``) under ``wrk``: single-call requests/s, bulk NDJSON
  calls/s, CPU seconds per 1,000 calls.

Prints a table with the targets and writes ``bench-results/<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import ingestion, scenarios
from bench.fairness import fairness
from bench.footprint import footprint
from bench.report import evaluate, render
from bench.stack import ROOT, FleetSpec, Infra, PipelineConfig

FULL = {
    "footprint_calls": 100_000,
    "calls": 1_000_000,
    "counters": 10,
    "many_counters": 10_000,
    "many_accounts": 100,
    "backlogs": [100_000, 1_000_000],
    "latency_seconds": 30.0,
    "naive_calls": 20_000,
    "naive_flush_rows": 1_000,
    "ingest_seconds": 10.0,
    "bulk_lines": 1_000,
    "timeout": 1800.0,
    "fair_calls": 500_000,
    "fair_conversions": 100_000,
    "fair_b_alone_seconds": 20.0,
    "fair_b_after_hang_seconds": 30.0,
}
QUICK = {
    "footprint_calls": 2_000,
    "calls": 5_000,
    "counters": 10,
    "many_counters": 50,
    "many_accounts": 5,
    "backlogs": [2_000, 5_000],
    "latency_seconds": 2.0,
    "naive_calls": 400,
    "naive_flush_rows": 100,
    "ingest_seconds": 1.0,
    "bulk_lines": 200,
    "timeout": 120.0,
    "fair_calls": 5_000,
    "fair_conversions": 1_000,
    "fair_b_alone_seconds": 3.0,
    "fair_b_after_hang_seconds": 3.0,
}
SECTIONS = ("e2e", "many", "latency", "backlog", "naive", "ingest", "footprint")
# Run only when named (--only fairness): client A's flood of FULL's 500,000 calls comes on top of the rest.
OPTIONAL = ("fairness",)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short run (the test suite's check of the harness)")
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS + OPTIONAL, help="run only these sections (fairness runs only when named)"
    )
    parser.add_argument("--calls", type=int, help="end-to-end calls (default 1,000,000; quick 5,000)")
    parser.add_argument("--many-counters", type=int, help="counters of the second end-to-end run (10,000)")
    parser.add_argument("--many-accounts", type=int, help="registry accounts (logins) they spread over (100)")
    parser.add_argument("--backlogs", type=int, nargs=2, metavar=("SMALL", "LARGE"), help="backlog sizes")
    parser.add_argument("--producers", type=int, default=2, help="producer processes (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes (default 1)")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork pool size of each (default 2)")
    parser.add_argument("--egress-ips", type=int, default=1, help="egress IPs the fleet models (see bench/stack.py)")
    parser.add_argument("--flush-age", type=float, help="CALLTRACK_FLUSH_MAX_AGE of the runs (2 s; quick: 1 s)")
    parser.add_argument("--drain-interval", type=float, help="CALLTRACK_DRAIN_INTERVAL (0.5 s, the default setting)")
    parser.add_argument("--many-flush-age", type=float, help="flush age of the many-counter run (30 s; quick: 2 s)")
    parser.add_argument("--ingest-workers", type=int, default=1, help="processes of the ingestion service")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also run the end-to-end section on a local 3-master Redis Cluster beside the single Redis",
    )
    parser.add_argument("--cluster-shards", type=int, default=24, help="CALLTRACK_SHARDS of the cluster run (24)")
    parser.add_argument("--fair-calls", type=int, help="client A's flood in the fairness section (500,000)")
    parser.add_argument("--fair-conversions", type=int, help="lines of client A's conversions import (100,000)")
    parser.add_argument(
        "--webhook-pool", choices=("shared", "own"), default="own",
        help="fairness: webhook deliveries in their own worker pool (own, as deployed) or on every worker (shared)",
    )  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="py-spy the worker processes during end-to-end runs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results", help="where the JSON goes")
    return parser.parse_args(argv)


def dedup_buckets(size: dict[str, Any], sections: set[str], many_on_base: bool) -> int:
    """Dedup hashes per shard for the calls the base namespace takes in this run: about 100 marks each
    (a deployment sizes its first period the same way; later periods size themselves)."""
    calls = size["calls"] * (("e2e" in sections) + ("many" in sections and many_on_base))
    calls += sum(size["backlogs"]) if "backlog" in sections else 0
    calls += 400_000 if "latency" in sections else 0  # at most 20% of 60,000 calls/s for 30 s
    buckets = 1024
    while buckets * 4 * 100 < calls:  # 4 shards
        buckets *= 2
    return buckets


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size: dict[str, Any] = dict(QUICK if args.quick else FULL)
    if args.calls:
        size["calls"] = args.calls
    if args.many_counters:
        size["many_counters"] = args.many_counters
    if args.many_accounts:
        size["many_accounts"] = args.many_accounts
    if args.backlogs:
        size["backlogs"] = list(args.backlogs)
    if args.fair_calls:
        size["fair_calls"] = args.fair_calls
    if args.fair_conversions:
        size["fair_conversions"] = args.fair_conversions
    if args.flush_age is None:
        args.flush_age = 1.0 if args.quick else 2.0
    if args.drain_interval is None:
        args.drain_interval = 0.5
    many_age = args.many_flush_age if args.many_flush_age else (args.flush_age if args.quick else 30.0)
    sections = set(args.only or SECTIONS)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f"calltrack-bench-{stamp}-"))
    spec = FleetSpec(workers=args.workers, concurrency=args.concurrency, egress_ips=args.egress_ips)
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    document: dict[str, Any] = {
        "started": stamp,
        "quick": args.quick,
        "machine": ingestion.machine(),
        "settings": {
            **size,
            "producers": args.producers,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "egress_ips": args.egress_ips,
            "flush_age": args.flush_age,
            "drain_interval": args.drain_interval,
            "many_flush_age": many_age,
            "ingest_workers": args.ingest_workers,
            "redis_appendfsync": "everysec",
            "cluster": args.cluster,
            "cluster_shards": args.cluster_shards if args.cluster else None,
            "webhook_pool": args.webhook_pool,
        },
        "results": results,
        "errors": errors,
        "work_dir": str(work_dir),
    }

    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def step(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        say(f"{name} ...")
        try:
            results[name] = fn()
            say(f"{name}: {json.dumps({k: v for k, v in results[name].items() if k != 'workers'})}")
        except Exception as error:  # one failed section must not lose the others
            errors[name] = f"{type(error).__name__}: {error}"
            say(f"{name} failed: {errors[name]}\n{traceback.format_exc()}")

    timeout = size["timeout"]
    with Infra(work_dir) as infra:
        many_on_base = "many" in sections and many_age == args.flush_age
        base = PipelineConfig(
            namespace="bench",
            flush_max_age=args.flush_age,
            drain_interval=args.drain_interval,
            accounts=size["many_accounts"] if many_on_base else 0,
            dedup_buckets=dedup_buckets(size, sections, many_on_base),
        )
        if sections & {"e2e", "latency", "backlog", "naive"} or (sections & {"many"} and many_age == args.flush_age):
            with scenarios.Stack(infra, base, spec, profile=args.profile) as stack:
                if "e2e" in sections:
                    step("e2e_10", lambda: scenarios.end_to_end(
                        stack, calls=size["calls"], counters=size["counters"], producers=args.producers,
                        counter_base=100_000, timeout=timeout, work_dir=work_dir))  # fmt: skip
                if "many" in sections and many_age == args.flush_age:
                    step("e2e_many", lambda: scenarios.end_to_end(
                        stack, calls=size["calls"], counters=size["many_counters"], producers=args.producers,
                        counter_base=1_000_000, timeout=timeout, work_dir=work_dir,
                        accounts=size["many_accounts"]))  # fmt: skip
                if "latency" in sections:
                    top = results.get("e2e_10", {}).get("rate") or 20_000.0
                    step("latency", lambda: scenarios.latency(
                        stack, rate=0.2 * top, seconds=size["latency_seconds"], counters=size["counters"],
                        counter_base=200_000, timeout=timeout))  # fmt: skip
                if "backlog" in sections:
                    small, large = size["backlogs"]
                    step("backlog_small", lambda: scenarios.backlog(
                        stack, calls=small, counters=size["counters"], producers=args.producers,
                        counter_base=300_000, timeout=timeout))  # fmt: skip
                    step("backlog_large", lambda: scenarios.backlog(
                        stack, calls=large, counters=size["counters"], producers=args.producers,
                        counter_base=400_000, timeout=timeout))  # fmt: skip
                if "naive" in sections:
                    stack.fleet.stop()
                    step("naive", lambda: scenarios.naive(
                        infra, stack.emulator, calls=size["naive_calls"], counters=size["counters"],
                        flush_rows=size["naive_flush_rows"], timeout=timeout))  # fmt: skip
        if args.cluster and "e2e" in sections:
            clustered = PipelineConfig(
                namespace="benchcl",
                flush_max_age=args.flush_age,
                drain_interval=args.drain_interval,
                shards=args.cluster_shards,
                cluster_url=infra.start_cluster(),
            )
            with scenarios.Stack(infra, clustered, spec, profile=args.profile) as stack:
                step("e2e_10_cluster", lambda: scenarios.end_to_end(
                    stack, calls=size["calls"], counters=size["counters"], producers=args.producers,
                    counter_base=100_000, timeout=timeout, work_dir=work_dir))  # fmt: skip
        if "many" in sections and many_age != args.flush_age:
            many = PipelineConfig(
                namespace="benchmany",
                flush_max_age=many_age,
                drain_interval=args.drain_interval,
                accounts=size["many_accounts"],
            )
            with scenarios.Stack(infra, many, spec, profile=args.profile) as stack:
                step("e2e_many", lambda: scenarios.end_to_end(
                    stack, calls=size["calls"], counters=size["many_counters"], producers=args.producers,
                    counter_base=1_000_000, timeout=timeout, work_dir=work_dir,
                    accounts=size["many_accounts"]))  # fmt: skip
        if "fairness" in sections:
            fair = PipelineConfig(
                namespace="benchfair",
                flush_max_age=args.flush_age,
                drain_interval=args.drain_interval,
                accounts=2,
                dedup_buckets=dedup_buckets({**size, "calls": size["fair_calls"]}, {"e2e"}, False),
            )
            fair_spec = dataclasses.replace(spec, webhook_pool=args.webhook_pool)
            with scenarios.Stack(infra, fair, fair_spec, profile=args.profile) as stack:
                step("fairness", lambda: fairness(
                    stack, a_calls=size["fair_calls"], a_counters=size["counters"],
                    a_conversions=size["fair_conversions"], producers=args.producers,
                    b_baseline=size["fair_b_alone_seconds"], b_after_hang=size["fair_b_after_hang_seconds"],
                    timeout=timeout, work_dir=work_dir))  # fmt: skip
        if "footprint" in sections:
            infra.flush()
            step("footprint", lambda: footprint(infra.redis_url, calls=size["footprint_calls"]))
        if "ingest" in sections:
            step("ingest", lambda: ingestion.ingest(
                infra, seconds=size["ingest_seconds"], bulk_lines=size["bulk_lines"],
                workers=args.ingest_workers))  # fmt: skip

    document["targets"] = evaluate(results, document["settings"])
    document["finished"] = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(render(document))
    print(f"\nresults: {path}\nlogs and profiles: {work_dir}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
