"""The table the harness prints, and the targets of issue 7 checked against one run's results."""

from __future__ import annotations

from typing import Any

from bench.costs import DEDUP_CLASSES


def _get(results: dict[str, Any], section: str, key: str) -> Any:
    return results.get(section, {}).get(key)


def evaluate(results: dict[str, Any], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: what it asks, the measured figure, and whether it holds (None: not measured)."""
    targets: list[dict[str, Any]] = []

    def target(name: str, wanted: str, measured: Any, ok: bool | None) -> None:
        targets.append({"target": name, "wanted": wanted, "measured": measured, "met": ok})

    e2e = _get(results, "e2e_10", "rate")
    naive = _get(results, "naive", "rate")
    many = _get(results, "e2e_many", "rate")
    target("end-to-end, 10 counters", ">= 20,000 calls/s", e2e, None if e2e is None else e2e >= 20_000)
    ratio = round(e2e / naive, 1) if e2e and naive else None
    target("end-to-end / naive", ">= 30x", ratio, None if ratio is None else ratio >= 30)
    half = round(many / e2e, 2) if many and e2e else None
    target("many counters / 10 counters", ">= 0.5", half, None if half is None else half >= 0.5)
    large = _get(results, "backlog_large", "max_worker_peak_rss_mb")
    small = _get(results, "backlog_small", "max_worker_peak_rss_mb")
    target("backlog: worker peak RSS", "< 250 MB", large, None if large is None else large < 250)
    growth = round(large / small, 2) if large and small else None
    grown = None if growth is None else growth <= 1.25
    target("backlog: RSS large / small backlog", "<= 1.25 (no growth)", growth, grown)
    p99 = _get(results, "latency", "p99_seconds")
    age = _get(results, "latency", "flush_max_age") or settings.get("flush_age")
    bound = (age or 0) + 2
    target("latency p99", f"<= flush age + 2 s ({bound:g} s)", p99, None if p99 is None else p99 <= bound)
    single = _get(results, "ingest", "single_rps")
    bulk = _get(results, "ingest", "bulk_calls_per_second")
    target("ingest single-call", ">= 3,000 requests/s", single, None if single is None else single >= 3_000)
    target("ingest bulk", ">= 30,000 calls/s", bulk, None if bulk is None else bulk >= 30_000)
    session = _get(results, "ingest", "session_rps")
    target(
        "session API (issue 9)",
        ">= single-call ingestion rate",
        session,
        None if session is None or single is None else session >= single,
    )
    _cost_targets(results, target)
    fair = results.get("fairness")
    if fair is not None:  # an optional section: a target only when it ran (a failure is in "errors")
        wanted = f"<= flush age + 3 s ({fair['target_seconds']:g} s)"
        target("(22) fairness: B's p99 under A's flood", wanted, fair["b_p99_seconds"], fair["met"])
    return targets


def _cost_targets(results: dict[str, Any], target: Any) -> None:
    """Issue 18: cost per call, and the rates it asks for."""
    e2e = results.get("e2e_10", {})
    cpu = e2e.get("cpu_us_per_call", {})
    redis, total = cpu.get("redis"), cpu.get("total_without_emulator")
    target("(18) Redis CPU per call, end to end", "<= 6 us", redis, None if redis is None else redis <= 6)
    target("(18) all processes' CPU per call", "<= 30 us", total, None if total is None else total <= 30)
    keys = e2e.get("redis_keys")
    dedup = None
    if keys is not None:
        calls = max(int(e2e.get("calls") or 1), 1)
        dedup = round(sum(v["bytes"] for k, v in keys.items() if k in DEDUP_CLASSES) / calls, 1)
    target("(18) dedup + call ref bytes per call", "<= 48", dedup, None if dedup is None else dedup <= 48)
    foot = results.get("footprint", {})
    for key, name, most in (
        ("dedup_bytes_per_conversion", "(18) dedup mark bytes (footprint)", 20),
        ("dedup_with_ref_bytes_per_call", "(18) dedup + call ref bytes (footprint)", 48),
        ("caller_history_bytes_per_caller", "(18) caller history bytes per caller", 32),
    ):
        value = foot.get(key)
        target(name, f"<= {most}", value, None if value is None else value <= most)
    rate, naive = e2e.get("rate"), results.get("naive", {}).get("rate")
    target("(18) end-to-end, 10 counters", ">= 60,000 calls/s", rate, None if rate is None else rate >= 60_000)
    ratio = round(rate / naive, 1) if rate and naive else None
    target("(18) end-to-end / naive", ">= 60x", ratio, None if ratio is None else ratio >= 60)
    ing = results.get("ingest", {})
    for key, name, floor in (
        ("bulk_calls_per_second", "(18) ingest bulk calls/s", 60_000),
        ("single_rps", "(18) ingest single-call requests/s", 8_000),
        ("session_rps", "(18) session API requests/s", 8_000),
    ):
        value = ing.get(key)
        target(name, f">= {floor:,}", value, None if value is None else value >= floor)


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
    r = results.get("ingest")
    if r:
        label = f"ingest ({r['workers']} process, {r['generator']})"
        row(label, "single-call requests/s", r["single_rps"])
        row(label, "single-call CPU s per 1,000 calls", r["single_cpu_seconds_per_1000"])
        row(label, f"bulk calls/s ({r['bulk_lines']} lines a request)", r["bulk_calls_per_second"])
        row(label, "bulk CPU s per 1,000 calls", r["bulk_cpu_seconds_per_1000"])
        if "session_rps" in r:
            row(label, "session API requests/s (GET /v1/number)", r["session_rps"])
            row(label, "session API CPU s per 1,000 requests", r["session_cpu_seconds_per_1000"])
        for what, value in r.get("cpu_us_per_call", {}).items():
            row(label, f"CPU µs per call, {what.replace('_', ' ')}", value)
        errors = r["single_errors"] + r["bulk_errors"] + r.get("session_errors", 0)
        row(label, "non-2xx / socket errors", errors)
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
    lines += ["", "targets (issue 7; (18): issue 18):"]
    for t in document.get("targets", []):
        mark = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
        lines.append(f"  {t['target'].ljust(36)} {t['wanted'].ljust(28)} {_n(t['measured']).rjust(10)}  {mark}")
    for name, error in document.get("errors", {}).items():
        lines.append(f"  error in {name}: {error}")
    return "\n".join(lines)
