"""What the console's fleet and counters pages show, read from Redis (issue 19).

Throughput comes from what the pipeline keeps anyway, no counter of its own: every batch record holds
its rows and when it was sealed and became final, and the indexes list every open batch and the
newest ``HISTORY_SCAN`` final ones per shard (:func:`worker.ops.overview.batches`). Summing rows into
time slots gives calls sealed into batches and calls final at Metrica per slot; the history bound
keeps the read bounded whatever the traffic.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from worker.ops.counter_view import batch_figures, held_calls, token_state
from worker.ops.overview import BatchInfo, batches, counters_known, status

if TYPE_CHECKING:
    from worker.runtime import Runtime

TOKEN_RANK = {"refused": 3, "expired": 3, "unreadable": 3, "missing": 2, "near_expiry": 1, "ok": 0}


@dataclass(frozen=True, slots=True)
class Slot:
    start_ms: int
    sealed: int
    final: int


def throughput(infos: list[BatchInfo], *, hours: float = 6.0, slot_minutes: int = 10) -> list[Slot]:
    """Calls sealed into batches and calls that reached a final status, per slot, oldest first."""
    size = slot_minutes * 60_000
    now = int(time.time() * 1000)
    first = (now - int(hours * 3_600_000)) // size * size
    count = (now - first) // size + 1
    sealed = [0] * count
    final = [0] * count
    for info in infos:
        rows = int(info.record.get("rows") or 0)
        for name, into in (("sealed_at", sealed), ("final_at", final)):
            at = int(info.record.get(name) or 0)
            if at >= first:
                into[min((at - first) // size, count - 1)] += rows
    return [Slot(first + i * size, sealed[i], final[i]) for i in range(count)]


def stream_lag(rt: Runtime) -> list[dict[str, Any]]:
    """Per shard: entries not drained yet, and the age of the oldest."""
    now = time.time() * 1000
    pipe = rt.redis.pipeline(transaction=False)
    for shard in range(rt.keys.shards):
        pipe.xlen(rt.keys.stream(shard))
        pipe.xrange(rt.keys.stream(shard), count=1)
    replies = pipe.execute()
    out = []
    for shard in range(rt.keys.shards):
        length, first = int(replies[2 * shard]), cast(list[tuple[str, Any]], replies[2 * shard + 1])
        oldest = (now - int(first[0][0].split("-", 1)[0])) / 1000 if first else 0.0
        out.append({"shard": shard, "calls": length, "oldest_seconds": round(max(oldest, 0.0), 1)})
    return out


def counter_rows(rt: Runtime, sort: str = "health") -> list[dict[str, Any]]:
    """One row per known counter with its health figures, sorted (``health`` puts the worst first)."""
    infos = batches(rt)
    glance = {s.counter_id: s for s in status(rt)}
    held, _ = held_calls(rt)
    counters = sorted(set(glance) | counters_known(rt, infos, Tally()))
    now = time.time()
    rows = []
    for counter in counters:
        mine = [b for b in infos if b.counter_id == counter]
        figures = batch_figures(mine)
        oldest = figures["oldest_sealed_ms"]
        token = token_state(rt, counter)
        item = glance.get(counter)
        rows.append(
            {
                "counter_id": counter,
                "failure_rate": figures["failure_rate"],
                "held": sum(1 for h in held if h.counter_id == counter),
                "oldest_seconds": round(now - oldest / 1000, 1) if oldest else 0.0,
                "token": token.get("state", "missing"),
                "waiting": item.pending_calls if item else 0,
                "uploaded": figures["calls_uploaded"],
                "refused": figures["rows_refused"],
                "quarantined": figures["batches"].get("QUARANTINED", 0),
                "open_uploads": figures["open_uploads"],
            }
        )
    keys = {
        "health": lambda r: (
            -TOKEN_RANK.get(r["token"], 0),
            -r["quarantined"],
            -r["failure_rate"],
            -r["held"],
            -r["oldest_seconds"],
        ),
        "failure_rate": lambda r: -r["failure_rate"],
        "held": lambda r: -r["held"],
        "oldest": lambda r: -r["oldest_seconds"],
        "token": lambda r: -TOKEN_RANK.get(r["token"], 0),
        "counter": lambda r: r["counter_id"],
    }
    return sorted(rows, key=keys.get(sort, keys["health"]))


SORTS = ("health", "failure_rate", "held", "oldest", "token", "counter")
