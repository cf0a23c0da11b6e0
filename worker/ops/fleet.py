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

from worker.dataplane.entries import events_waiting
from worker.delivery.restore_hold import held_shards
from worker.ops.counter_view import batch_figures, held_calls, token_state
from worker.ops.overview import BatchInfo, batches, counters_known, status
from worker.ops.quotas import quota_view

if TYPE_CHECKING:
    from worker.runtime import Runtime

TOKEN_RANK = {"refused": 3, "expired": 3, "unreadable": 3, "missing": 2, "near_expiry": 1, "ok": 0}
TOKEN_WORDS = {
    "refused": "token refused",
    "expired": "token expired",
    "unreadable": "token unreadable",
    "missing": "no token",
    "near_expiry": "token expires soon",
}
FAILURE_RATE_BAD = 0.2  # the console marks a counter whose final batches fail more often than this


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
        pipe.hmget(rt.keys.stream_tally(shard), ["e", "n"])
        pipe.xrange(rt.keys.stream(shard), count=1)
    replies = pipe.execute()
    out = []
    for shard in range(rt.keys.shards):
        length = events_waiting(int(replies[3 * shard]), replies[3 * shard + 1])
        first = cast(list[tuple[str, Any]], replies[3 * shard + 2])
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
    restore_held = set(held_shards(rt))
    spent = {q.login for q in quota_view(rt.redis, rt.keys, rt.settings) if q.left_for_uploads <= 0}
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
                "account": token.get("account") or rt.accounts.owner_id(counter),
            }
        )
        rows[-1]["health"] = health_words(rows[-1], quota_spent=_quota_key(rt, counter) in spent,
                                          restore_held=rt.keys.shard_of(counter) in restore_held)  # fmt: skip
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


def health_words(row: dict[str, Any], *, quota_spent: bool, restore_held: bool) -> list[str]:
    """What is wrong with a counter, worst first, in words (empty: healthy)."""
    words = [TOKEN_WORDS[row["token"]]] if row["token"] in TOKEN_WORDS else []
    if restore_held:
        words.append("restore held")
    if quota_spent:
        words.append("upload quota spent")
    if row["quarantined"]:
        words.append("quarantine")
    if row["failure_rate"] > FAILURE_RATE_BAD:
        words.append("linkage failures")
    if row["held"]:
        words.append("held calls")
    return words


def _quota_key(rt: Runtime, counter: int) -> str | None:
    """The name the counter's token's quota counts under (never shown)."""
    token = rt.accounts.token_for(counter, removed_ok=True)
    return rt.accounts.login_of(token) if token is not None else None


SORTS = ("health", "failure_rate", "held", "oldest", "token", "counter")
