"""The table the harness prints, and the targets (issues 7, 18, 26) checked against one run's results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.costs import DEDUP_CLASSES


def _get(results: dict[str, Any], section: str, key: str) -> Any:
    return results.get(section, {}).get(key)


def _ratio(numerator: Any, denominator: Any, scale: float = 1.0, digits: int = 1) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(float(numerator) / float(denominator) * scale, digits)


def _http_errors(results: dict[str, Any], *figures: tuple[str, str]) -> int:
    """Non-2xx answers and socket errors of the load runs behind a figure (issue 26: they fail it)."""
    return sum(int(_get(results, section, f"{name}_errors") or 0) for section, name in figures)


FLOOR_OF = {"single": "single", "bulk": "bulk", "session": "single"}  # each ingestion figure's floor
FIGURE_OF = {"single": "single_rps", "bulk": "bulk_calls_per_second", "session": "session_rps"}


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    """Issue 26's ratios of one run (the JSON's ``ratios``): end to end over naive, and each ingestion
    figure as a % of its floor, by rate and by CPU per call (the floor's µs as a % of the service's:
    on a loaded machine both rates are capped by the CPU they get, so the rate share flatters)."""
    out: dict[str, float | None] = {
        "e2e_over_naive": _ratio(_get(results, "e2e_10", "rate"), _get(results, "naive", "rate"))
    }
    ingest, floor = results.get("ingest", {}), results.get("floor", {})
    for kind, floor_kind in FLOOR_OF.items():
        out[f"{kind}_pct_of_floor"] = _ratio(ingest.get(FIGURE_OF[kind]), floor.get(FIGURE_OF[floor_kind]), 100)
        floor_cpu = floor.get("cpu_us_per_call", {}).get(f"{floor_kind}_floor")
        cpu = ingest.get("cpu_us_per_call", {}).get(f"{kind}_ingestion")
        out[f"{kind}_floor_cpu_pct_of_ingest"] = _ratio(floor_cpu, cpu, 100)
    return out


def evaluate(
    results: dict[str, Any], settings: dict[str, Any], errors: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Each target: what it asks, the measured figure, and whether it holds.

    ``met`` is ``None`` only when a section the figure needs did not run in this run. A target whose
    sections ran (or failed) without giving its figure is failed with ``error`` saying why, as is one
    whose load runs had non-2xx answers or socket errors: no target is met by a figure not measured."""
    errors = errors or {}
    attempted = set(results) | set(errors)
    targets: list[dict[str, Any]] = []

    def target(
        name: str, wanted: str, measured: Any, holds: Callable[[Any], bool], sections: tuple[str, ...], http: int = 0
    ) -> None:
        entry: dict[str, Any] = {"target": name, "wanted": wanted, "measured": measured, "met": None}
        if not all(section in attempted for section in sections):
            entry["met"] = None  # not run: a section it needs was not asked for
        elif measured is None:
            failed = [f"{s}: {errors[s]}" for s in sections if s in errors]
            entry["met"] = False
            entry["error"] = "not measured: " + ("; ".join(failed) or f"{', '.join(sections)} ran without it")
        elif http:
            entry["met"] = False
            entry["error"] = f"{http:,} non-2xx answers or socket errors in its load runs"
        else:
            entry["met"] = bool(holds(measured))
        targets.append(entry)

    e2e = _get(results, "e2e_10", "rate")
    many = _get(results, "e2e_many", "rate")
    ratio = ratios(results)["e2e_over_naive"]
    target("(26) end-to-end / naive, same run", ">= 50x", ratio, lambda v: v >= 50, ("e2e_10", "naive"))
    half = _ratio(many, e2e, digits=2)
    target("many counters / 10 counters", ">= 0.5", half, lambda v: v >= 0.5, ("e2e_many", "e2e_10"))
    large = _get(results, "backlog_large", "max_worker_peak_rss_mb")
    small = _get(results, "backlog_small", "max_worker_peak_rss_mb")
    target("backlog: worker peak RSS", "< 250 MB", large, lambda v: v < 250, ("backlog_large",))
    growth = _ratio(large, small, digits=2)
    both = ("backlog_small", "backlog_large")
    target("backlog: RSS large / small backlog", "<= 1.25 (no growth)", growth, lambda v: v <= 1.25, both)
    p99 = _get(results, "latency", "p99_seconds")
    bound = (_get(results, "latency", "flush_max_age") or settings["flush_age"]) + 2
    target("latency p99", f"<= flush age + 2 s ({bound:g} s)", p99, lambda v: v <= bound, ("latency",))
    _floor_targets(results, target)
    _cost_targets(results, target)
    if "fairness" in attempted:  # an optional section: a target only when it was asked for
        fair = results.get("fairness") or {}
        bound = fair.get("target_seconds") or settings["flush_age"] + 3
        wanted = f"<= flush age + 3 s ({bound:g} s)"
        b_p99 = fair.get("b_p99_seconds")
        target("(22) fairness: B's p99 under A's flood", wanted, b_p99, lambda v: v <= bound, ("fairness",))
    return targets


def _floor_targets(results: dict[str, Any], target: Any) -> None:
    """Issue 26: each ingestion figure as a share (%) of its floor measured in the same run."""
    shares = ratios(results)
    for name, kind, least in (
        ("(26) ingest single-call / floor", "single", 60),
        ("(26) ingest bulk / bulk floor", "bulk", 50),
        ("(26) session API / single floor", "session", 60),
    ):
        http = _http_errors(results, ("ingest", kind), ("floor", FLOOR_OF[kind]))
        holds = lambda v, least=least: v >= least  # noqa: E731
        target(name, f">= {least}% of its floor", shares[f"{kind}_pct_of_floor"], holds, ("ingest", "floor"), http)


def _cost_targets(results: dict[str, Any], target: Any) -> None:
    """Issues 18 and 26: cost per call (CPU and bytes; issue 18's absolute rates became issue 26's
    ratios; issue 26 names its own CPU goals beside issue 18's stricter ones)."""
    e2e = results.get("e2e_10", {})
    cpu = e2e.get("cpu_us_per_call", {})
    redis, total = cpu.get("redis"), cpu.get("total_without_emulator")
    only = ("e2e_10",)
    target("(18) Redis CPU per call, end to end", "<= 6 us", redis, lambda v: v <= 6, only)
    target("(18) all processes' CPU per call", "<= 30 us", total, lambda v: v <= 30, only)
    target("(26) Redis CPU per call, end to end", "<= 10 us", redis, lambda v: v <= 10, only)
    target("(26) all processes' CPU per call", "<= 50 us", total, lambda v: v <= 50, only)
    keys = e2e.get("redis_keys")
    dedup = None
    if keys is not None and e2e.get("calls"):
        dedup = round(sum(v["bytes"] for k, v in keys.items() if k in DEDUP_CLASSES) / int(e2e["calls"]), 1)
    target("(18) dedup + call ref bytes per call", "<= 48", dedup, lambda v: v <= 48, only)
    foot = results.get("footprint", {})
    for key, name, most in (
        ("dedup_bytes_per_conversion", "(18) dedup mark bytes (footprint)", 20),
        ("dedup_with_ref_bytes_per_call", "(18) dedup + call ref bytes (footprint)", 48),
        ("caller_history_bytes_per_caller", "(18) caller history bytes per caller", 32),
    ):
        target(name, f"<= {most}", foot.get(key), lambda v, most=most: v <= most, ("footprint",))


def _n(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:,.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _costs(row: Any, label: str, r: dict[str, Any]) -> None:
    """Issue 18: CPU µs per call of every process, Redis bytes per call in flight and retained."""
    for name, value in r.get("cpu_us_per_call", {}).items():
        row(label, f"CPU µs per call, {name.replace('_', ' ')}", value)
    by_command = r.get("redis_us_per_call_by_command", {})
    if by_command:
        row(label, "Redis µs per call by command", ", ".join(f"{k} {v:g}" for k, v in by_command.items()))
    row(label, "Redis bytes per call in flight (peak used_memory delta)", r.get("redis_bytes_per_call_in_flight_peak"))
    row(label, "Redis bytes per call after final (used_memory delta)", r.get("redis_bytes_per_call_after_final"))
    row(label, "Redis bytes per call retained (dedup, refs, records)", r.get("redis_bytes_per_call_retained"))
    row(label, "Redis bytes per call kept with rows (rows TTL)", r.get("redis_bytes_per_call_with_rows"))
    calls = max(int(r.get("calls") or 1), 1)
    for name, v in sorted(r.get("redis_keys", {}).items(), key=lambda kv: -kv[1]["bytes"]):
        row(label, f"Redis keys '{name}': count, bytes per call", f"{int(v['keys']):,}, {v['bytes'] / calls:,.1f}")


def render(document: dict[str, Any]) -> str:
    results: dict[str, Any] = document["results"]
    m = document["machine"]
    lines = [
        f"calltrack benchmark {document['started']}{' (quick)' if document['quick'] else ''}",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}, "
        f"load average at start {m['load_average_at_start']}",
        "",
    ]
    rows: list[tuple[str, str, str]] = []

    def row(section: str, what: str, value: Any) -> None:
        rows.append((section, what, _n(value)))

    for key, title in (
        ("e2e_10", "end-to-end"),
        ("e2e_10_cluster", "end-to-end on a 3-master Redis Cluster"),
        ("e2e_many", "end-to-end"),
    ):
        r = results.get(key)
        if r:
            label = f"{title}, {r['counters']:,} counters"
            row(label, f"calls/s ({r['calls']:,} calls, first submit -> last upload answered)", r["rate"])
            row(label, "seconds", r["seconds"])
            row(label, f"producer calls/s ({r['producers']} processes)", r["produce_rate"])
            row(label, f"uploads (quota floor {r['quota_floor_seconds']} s)", r["uploads"])
            _costs(row, label, r)
    r = results.get("naive")
    if r:
        row("naive (1 Celery task per call)", f"enqueue calls/s ({r['calls']:,} calls)", r["enqueue_rate"])
        row("naive (1 Celery task per call)", "consume calls/s", r["consume_rate"])
        if results.get("e2e_10"):
            row("naive (1 Celery task per call)", "pipeline / naive", round(results["e2e_10"]["rate"] / r["rate"], 1))
    for key in ("backlog_small", "backlog_large"):
        r = results.get(key)
        if r:
            label = f"backlog {r['calls']:,}"
            row(label, "drain seconds (fleet start -> last upload)", r["drain_seconds"])
            row(label, "drain calls/s", r["drain_rate"])
            row(label, "max peak RSS of a worker process, MB", r["max_worker_peak_rss_mb"])
            row(label, "Redis bytes per call waiting", r.get("redis_bytes_per_call_in_flight"))
            per = ", ".join(f"{w['role']} {w['peak_rss_mb']:.0f}" for w in r["workers"])
            row(label, "peak RSS per process, MB", per)
    r = results.get("latency")
    if r:
        label = f"latency @ {r['rate']:,.0f} calls/s"
        row(label, f"p50 s (flush age {r['flush_max_age']:g} s, {r['measured']:,} calls)", r["p50_seconds"])
        row(label, "p99 s", r["p99_seconds"])
        row(label, "max s", r["max_seconds"])
    r = results.get("fairness")
    if r:
        label = f"fairness (A {r['a_calls']:,} calls + {r['a_conversions']:,} conversions; B 1 call/s)"
        row(label, f"B p99 s ({r['b_calls']} calls; target {r['target_seconds']:g} s)", r["b_p99_seconds"])
        row(label, "B max s", r["b_max_seconds"])
        row(label, f"B p99 s while A's webhook hung ({r['b_calls_while_hook_hung']} calls)", r["b_hung_p99_seconds"])
        row(label, f"B p99 s alone ({r['b_alone_calls']} calls, before A)", r["b_alone_p99_seconds"])
        row(label, "A calls/s (first submit -> last upload answered)", r["a_rate"])
        row(label, "A conversions import lines/s", r["a_conversions_import_rate"])
        row(label, f"A webhook: connections held (peak open; pool {r['webhook_pool']})",
            f"{r['webhook_connections']} ({r['webhook_peak_open']})")  # fmt: skip
        row(label, "load average before -> after", f"{r['load_before']['load_average']} -> "
            f"{r['load_after']['load_average']}")  # fmt: skip
    _ingest_rows(results, row)
    r = results.get("footprint")
    if r:
        label = f"Redis footprint ({r['calls']:,} calls)"
        row(label, "dedup mark + call ref, bytes per call", r["dedup_with_ref_bytes_per_call"])
        row(label, "dedup mark alone (conversion), bytes", r["dedup_bytes_per_conversion"])
        row(label, "caller history, bytes per (counter, caller)", r["caller_history_bytes_per_caller"])
        row(label, "hash encodings", ", ".join(r["encodings"]))
    w1 = max((len(a) for a, _, _ in rows), default=10)
    w2 = max((len(b) for _, b, _ in rows), default=10)
    lines += [f"{a.ljust(w1)}  {b.ljust(w2)}  {c}" for a, b, c in rows]
    lines += ["", "targets (issue 7; (18): issue 18; (26): issue 26):"]
    for t in document.get("targets", []):
        mark = {True: "met", False: "NOT MET", None: "not run"}[t["met"]]
        if t.get("error"):
            mark = f"FAILED: {t['error']}"
        lines.append(f"  {t['target'].ljust(40)} {t['wanted'].ljust(28)} {_n(t['measured']).rjust(10)}  {mark}")
    for name, error in document.get("errors", {}).items():
        lines.append(f"  error in {name}: {error}")
    return "\n".join(lines)


def _ingest_rows(results: dict[str, Any], row: Any) -> None:
    """The floors and the ingestion service: 2xx answers only, errors beside each figure, and each
    ingestion figure as a share of its floor from the same run (issue 26)."""
    shares = ratios(results)
    for key, title in (("floor", "floor (bare endpoints)"), ("ingest", "ingest")):
        r = results.get(key)
        if not r:
            continue
        label = f"{title} ({r['workers']} process, {r['generator']})"
        for kind, what in (
            ("single", "single-call requests/s"),
            ("bulk", f"bulk calls/s ({r['bulk_lines']} lines a request)"),
            ("session", "session API requests/s (GET /v1/number)"),
        ):
            if FIGURE_OF[kind] not in r:
                continue
            share = shares[f"{kind}_pct_of_floor"] if key == "ingest" else None
            floor_name = "bulk" if kind == "bulk" else "single-call"
            of_floor = f", {share:g}% of the {floor_name} floor" if share is not None else ""
            row(label, f"{what} (2xx only; {r[f'{kind}_errors']:,} errors{of_floor})", r[FIGURE_OF[kind]])
            if key == "ingest":
                cpu = shares[f"{kind}_floor_cpu_pct_of_ingest"]
                row(label, f"{kind}: the floor's CPU µs per call as % of this one's", cpu)
        for what, value in r.get("cpu_us_per_call", {}).items():
            row(label, f"CPU µs per call, {what.replace('_', ' ')}", value)
