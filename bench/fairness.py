"""Fairness between clients (issue 22, item 6): one client's flood must not delay another's calls.

Client A (10 counters, its own login) floods calls through the producer, and imports a CRM export of
conversions through the same producer, while client B (one counter, its own login) sends one call a
second. A's account has a webhook whose receiver hangs: it accepts every connection and drips one
byte of an answer that never completes (below ``webhook_timeout``, which is per read), so A's
deliveries are in flight for as long as the run lasts. B keeps sending until A's rows are all at
the emulator and for ``b_after_hang`` more seconds after the receiver's first connection.

B's figure is the enqueue-to-upload latency of every B call (``scenarios.stamped_latencies``: the
producer's stamp against the emulator's arrival of the upload carrying it), first alone (a short
baseline), then under A's flood. The target is ``flush_max_age`` (read from the settings the fleet
runs with) + 3 s for the p99 under the flood. Nothing is assumed: every B call must be at the
emulator exactly once, an empty sample is an error, and a receiver that was never called fails the
section (it would not have measured what it says).
"""

from __future__ import annotations

import contextlib
import csv
import math
import multiprocessing
import os
import re
import secrets
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.emulator_proc import bench_token
from bench.load import produce, produce_paced
from bench.scenarios import ScenarioTimeout, Stack, stamped_samples
from config.settings import Settings
from ingest.crm_csv import ColumnMap, import_file
from worker.accounts.model import AccountIn, parse
from worker.runtime import Runtime

A_BASE = 700_000  # client A's counters: A_BASE .. A_BASE + a_counters - 1
B_COUNTER = 800_000  # client B's one counter
TARGET_MARGIN = 3.0  # seconds over the flush age the issue allows B's p99
STALL_SECONDS = 120.0  # no new row at the emulator for this long: the pipeline stopped, the section fails


class FairnessError(RuntimeError):
    """The section could not stand behind a figure (calls missing, no sample, the receiver never called)."""


class DripReceiver:
    """A webhook receiver on loopback that never answers: it accepts every connection and sends one byte
    of a status line every ``drip`` seconds, so a client whose timeout is per read waits forever.

    Keeps every connection's (opened, closed) times, so the run can say when deliveries were in flight.
    """

    def __init__(self, drip: float = 5.0) -> None:
        self.drip = drip
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self.opened: list[float] = []
        self.open: dict[socket.socket, int] = {}  # connection -> bytes dripped so far
        self.peak_open = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._accept, name="drip-accept", daemon=True),
            threading.Thread(target=self._dripping, name="drip-send", daemon=True),
        ]

    def start(self) -> DripReceiver:
        for thread in self._threads:
            thread.start()
        return self

    @property
    def first_open(self) -> float | None:
        with self._lock:
            return self.opened[0] if self.opened else None

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.opened.append(time.time())
                self.open[conn] = 0
                self.peak_open = max(self.peak_open, len(self.open))

    def _dripping(self) -> None:
        line = b"HTTP/1.1 200 OK\r\nX-Drip: " + b"." * 1_000_000
        while not self._stop.wait(self.drip):
            with self._lock:
                for conn, sent in list(self.open.items()):
                    try:
                        conn.sendall(line[sent : sent + 1])
                        self.open[conn] = sent + 1
                    except OSError:
                        conn.close()
                        del self.open[conn]

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        with self._lock:
            held = len(self.open)
            for conn in self.open:
                conn.close()
            self.open.clear()
        self.server.close()
        return {"connections": len(self.opened), "peak_open": self.peak_open, "open_at_end": held}


def load_now() -> dict[str, Any]:
    """The machine's load: ``uptime``'s line and the three load averages (the machine may be shared)."""
    text = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        text = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5, check=False).stdout.strip()  # noqa: S607
    return {"uptime": text, "load_average": [round(x, 2) for x in os.getloadavg()]}


def register(settings: Settings, a_counters: int, webhook_url: str) -> None:
    """Client A (login 0, a webhook) and client B (login 1), each with its own token and counters."""
    runtime = Runtime(settings)
    try:
        a = {
            "id": "client-a",
            "tokens": [{"token": bench_token(0)}],
            "counters": [{"id": A_BASE + i} for i in range(a_counters)],
            "webhook_url": webhook_url,
            "webhook_secret": secrets.token_urlsafe(24),
        }
        b = {"id": "client-b", "tokens": [{"token": bench_token(1)}], "counters": [{"id": B_COUNTER}]}
        runtime.accounts.sync([parse(AccountIn, a), parse(AccountIn, b)])
    finally:
        runtime.close()


def write_conversions(path: Path, lines: int, a_counters: int) -> None:
    """A CRM export of ``lines`` conversions over A's counters (one per line, each its own deal)."""
    now = int(time.time())
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["deal", "counter", "ym_client_id", "closed"])
        for n in range(lines):
            out.writerow([f"deal-{n}", A_BASE + n % a_counters, 1_556_018_960_000_000_000 + n, now - 900 - n % 3600])


def _import_conversions(args: tuple[Settings, Path]) -> tuple[int, int, float, float]:
    """(accepted, rejected, began, ended) of one ``import_file`` through the producer (a child process)."""
    settings, path = args
    rt = Runtime(settings)
    mapping = ColumnMap.parse(
        ["conversion_id=deal", "counter_id=counter", "ClientId=ym_client_id", "DateTime=closed"], ["Target=deal_won"]
    )
    began = time.time()
    report = import_file(rt.producer, path, mapping)
    ended = time.time()
    rt.close()
    return report.accepted, len(report.rejected), began, ended


_SEQ = re.compile(r"/([^/?]+)/(\d+)\?t=")


def account_b(stack: Stack, run: str, sent: int) -> dict[str, Any]:
    """Every one of B's ``sent`` calls of ``run`` stored at the emulator exactly once, and their latencies."""
    seen: Counter[int] = Counter()
    for row in stack.emulator.stored_rows(B_COUNTER):
        match = _SEQ.search(row.get("CallTrackerURL", ""))
        if match and match.group(1) == run:
            seen[int(match.group(2))] += 1
    missing = sorted(set(range(sent)) - set(seen))
    doubled = sorted(n for n, c in seen.items() if c > 1)
    extra = sorted(n for n in seen if n >= sent)
    samples = stamped_samples(stack.emulator, run, [B_COUNTER])
    return {"sent": sent, "stored": sum(seen.values()), "missing": missing, "doubled": doubled, "extra": extra,
            "latencies": sorted(lat for _, lat, _ in samples), "samples": samples}  # fmt: skip


def figures(lat: list[float]) -> dict[str, float]:
    """p50, p99, max of a latency sample; an empty sample is an error, never a zero."""
    if not lat:
        raise FairnessError("no latency sample: no B call was measured")
    return {
        "p50_seconds": round(lat[min(len(lat) - 1, int(len(lat) * 0.50))], 3),
        "p99_seconds": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3),
        "max_seconds": round(lat[-1], 3),
    }


def check_accounted(b: dict[str, Any], what: str) -> None:
    if b["missing"] or b["doubled"] or b["extra"] or len(b["latencies"]) != b["sent"]:
        raise FairnessError(
            f"{what}: {b['sent']} calls sent, {b['stored']} rows at the emulator; missing {b['missing'][:20]}, "
            f"stored twice {b['doubled'][:20]}, unknown {b['extra'][:20]}, {len(b['latencies'])} measured"
        )


def fairness(
    stack: Stack,
    *,
    a_calls: int,
    a_counters: int,
    a_conversions: int,
    producers: int,
    b_baseline: float,
    b_after_hang: float,
    timeout: float,
    work_dir: Path,
    drip: float = 5.0,
) -> dict[str, Any]:
    settings = stack.settings
    flush_age = settings.flush_max_age  # the setting the fleet runs with (PipelineConfig.env -> both)
    target = flush_age + TARGET_MARGIN
    load_before = load_now()
    receiver = DripReceiver(drip).start()
    try:
        register(settings, a_counters, receiver.url)
        # B alone: the figure A's flood must not move.
        before = stack.emulator.rows()
        base_run = f"fairB0x{time.time_ns()}"
        base_sent = produce_paced(settings, base_run, 1.0, b_baseline, 1, counter_base=B_COUNTER)
        stack.wait_rows(before + base_sent, timeout)
        base = account_b(stack, base_run, base_sent)
        check_accounted(base, "B alone")
        # A's flood and import, B at 1 call/s, A's receiver hanging.
        before = stack.emulator.rows()
        b_run = f"fairBx{time.time_ns()}"
        stop = threading.Event()
        b_box: dict[str, Any] = {}

        def send_b() -> None:
            try:
                b_box["sent"] = produce_paced(settings, b_run, 1.0, math.inf, 1, counter_base=B_COUNTER, stop=stop)
            except Exception as error:  # reported below, never lost in the thread
                b_box["error"] = error

        if stack.profile:
            stack.start_profiles(work_dir, "fairness")
        sender = threading.Thread(target=send_b, name="client-b", daemon=True)
        sender.start()
        path = work_dir / "fairness-conversions.csv"
        write_conversions(path, a_conversions, a_counters)
        a_run = f"fairAx{time.time_ns()}"
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            imported = pool.apply_async(_import_conversions, ((settings.model_copy(), path),))
            accepted, began, produced = produce(
                settings.model_copy(), a_run, a_calls, a_counters, producers, counter_base=A_BASE
            )
            conv_accepted, conv_rejected, conv_began, conv_ended = imported.get(timeout)
        if accepted != a_calls or conv_accepted != a_conversions or conv_rejected:
            raise FairnessError(
                f"A: {accepted} of {a_calls} calls, {conv_accepted} of {a_conversions} conversions accepted "
                f"({conv_rejected} rejected)"
            )
        stalled: ScenarioTimeout | None = None
        try:
            stack.wait_rows(before + accepted + conv_accepted, timeout, stall=STALL_SECONDS)
            _wait_hang(stack, receiver, b_after_hang, timeout, sender)
        except ScenarioTimeout as error:
            stalled = error  # reported below with B's calls so far
        finally:
            stop.set()
            sender.join(30)
        if "error" in b_box:
            raise FairnessError(f"client B's sender failed: {b_box['error']}")
        b_sent = int(b_box["sent"])
        try:
            if stalled is not None:
                raise stalled
            stack.wait_rows(before + accepted + conv_accepted + b_sent, timeout, stall=STALL_SECONDS)
        except ScenarioTimeout as error:
            b = account_b(stack, b_run, b_sent)
            seen = figures(b["latencies"]) if b["latencies"] else "none measured"
            raise FairnessError(
                f"{error}; B: {b['stored']} of {b_sent} calls at the emulator ({seen}); A's webhook receiver "
                f"held {len(receiver.opened)} connections"
            ) from None
        stack.stop_profiles()
        hang = receiver.stop()
        load_after = load_now()
    finally:
        receiver.stop()
    b = account_b(stack, b_run, b_sent)
    check_accounted(b, "B under A's flood")
    a = a_uploads(stack, a_counters)
    if a["calls"] != accepted or a["conversions"] != conv_accepted:
        raise FairnessError(f"A: {a['calls']} calls and {a['conversions']} conversions stored, "
                            f"{accepted} and {conv_accepted} sent")  # fmt: skip
    if not hang["connections"]:
        raise FairnessError("A's webhook receiver was never called: no delivery of A was in flight")
    first = receiver.opened[0]
    during = [lat for stamp, lat, _ in b["samples"] if stamp >= first]
    if not during:
        raise FairnessError("no B call was sent while A's webhook deliveries hung")
    under = figures(b["latencies"])
    a_end = max(a["answered"])
    return {
        "flush_max_age": flush_age,
        "target_seconds": target,
        "met": under["p99_seconds"] <= target,
        "b_calls": b_sent,
        **{f"b_{k}": v for k, v in under.items()},
        "b_calls_while_hook_hung": len(during),
        **{f"b_hung_{k}": v for k, v in figures(sorted(during)).items()},
        **where_b_waited(settings, b["samples"], a_counters),
        "b_alone_calls": base_sent,
        **{f"b_alone_{k}": v for k, v in figures(base["latencies"]).items()},
        "a_calls": accepted,
        "a_counters": a_counters,
        "a_produce_rate": round(accepted / (produced - began), 1),
        "a_rate": round(accepted / (a_end - began), 1),
        "a_seconds": round(a_end - began, 3),
        "a_conversions": conv_accepted,
        "a_conversions_import_rate": round(conv_accepted / (conv_ended - conv_began), 1),
        "a_uploads": len(a["answered"]),
        "webhook_connections": hang["connections"],
        "webhook_peak_open": hang["peak_open"],
        "webhook_open_at_end": hang["open_at_end"],
        "webhook_drip_seconds": drip,
        "webhook_timeout": settings.webhook_timeout,
        "webhook_pool": stack.fleet_spec.webhook_pool,
        "load_before": load_before,
        "load_after": load_after,
    }


def _wait_hang(stack: Stack, receiver: DripReceiver, seconds: float, timeout: float, sender: threading.Thread) -> None:
    """Until B has sent for ``seconds`` while A's receiver held a delivery (it never lets one go)."""
    deadline = time.monotonic() + timeout
    while True:
        first = receiver.first_open
        if first is not None and time.time() - first >= seconds:
            return
        if not sender.is_alive():
            raise FairnessError("client B's sender stopped early")
        stack.fleet.check()
        if time.monotonic() > deadline:
            raise FairnessError(f"A's webhook receiver was not called within {timeout:.0f} s")
        time.sleep(0.5)


def where_b_waited(settings: Settings, samples: list[tuple[float, float, str]], a_counters: int) -> dict[str, Any]:
    """B's latency split at its batch's seal (``sealed_at``, Redis's clock on this machine): before it, the
    shard stream and the buffer (drain behind A's entries, the flush age); after it, the upload task's wait
    in the queue, the counter lock and the quota. p99 of each part, and the A counters on B's shard."""
    rt = Runtime(settings)
    try:
        sealed = {c: rt.redis.hget(rt.keys.batch(c), "sealed_at") for c in {c for _, _, c in samples}}
        shard = rt.keys.shard_of(B_COUNTER)
        sharing = sum(1 for c in range(A_BASE, A_BASE + a_counters) if rt.keys.shard_of(c) == shard)
    finally:
        rt.close()
    if any(v is None for v in sealed.values()):
        raise FairnessError("a batch of B has no sealed_at: its record is gone")
    before = sorted(int(sealed[c]) / 1000 - stamp for stamp, _, c in samples)  # type: ignore[arg-type]
    after = sorted(stamp + lat - int(sealed[c]) / 1000 for stamp, lat, c in samples)  # type: ignore[arg-type]
    return {
        "b_to_seal_p99_seconds": figures(before)["p99_seconds"],
        "b_seal_to_upload_p99_seconds": figures(after)["p99_seconds"],
        "b_batches": len(sealed),
        "a_counters_on_b_shard": sharing,
    }


def a_uploads(stack: Stack, a_counters: int) -> dict[str, Any]:
    """A's stored calls and conversions (line quantities at the emulator) and its uploads' answer times."""
    _, answered = stack.emulator.upload_times()
    calls = conversions = 0
    times: list[float] = []
    for counter in range(A_BASE, A_BASE + a_counters):
        for upload in stack.emulator.uploads(counter):
            if upload["type"] == "CALLS":
                calls += int(upload["line_quantity"])
            else:
                conversions += int(upload["line_quantity"])
            if upload["comment"] in answered:
                times.append(answered[upload["comment"]])
    if not times:
        raise FairnessError("no upload of A was answered")
    return {"calls": calls, "conversions": conversions, "answered": times}
