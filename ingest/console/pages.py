"""What each console page shows: plain data for the templates (blocking: run in the thread pool)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from config.settings import Settings
from ingest.console.account_page import paged
from ingest.console.chart import chart
from worker.delivery import restore_hold
from worker.notify import outbox
from worker.ops import overview
from worker.ops.counter_view import counter_figures, counter_uploads, held_calls
from worker.ops.fleet import SORTS, counter_rows, stream_lag, throughput
from worker.ops.quotas import quota_view
from worker.ops.scrape import heartbeats
from worker.ops.status import where_call

if TYPE_CHECKING:
    from worker.runtime import Runtime


def when(ms: int | float | None) -> str:
    """A time in UTC for a page, or a dash."""
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(ms) / 1000))


def fleet(rt: Runtime) -> dict[str, Any]:
    infos = overview.batches(rt)
    beats = heartbeats(rt.redis, rt.keys)
    return {
        "chart": chart(throughput(infos)),
        "lag": stream_lag(rt),
        "quotas": quota_view(rt.redis, rt.keys, rt.settings),
        "beats": [
            {
                "role": b.role,
                "node": b.node,
                "host": b.host,
                "pid": b.pid,
                "age": round(b.age, 1),
                "alive": b.age < rt.settings.heartbeat_interval * 3,
            }
            for b in beats
        ],
        "held": int(rt.redis.xlen(rt.keys.held)),
        "restored": [
            {
                "shard": shard,
                "since": when(int(r.get("detected_at") or 0)),
                "why": r.get("why", ""),
                "evidence": r.get("evidence", ""),
            }
            for shard, r in restore_hold.held_shards(rt).items()
        ],
        "quarantined": sum(1 for b in infos if b.state == "QUARANTINED"),
        "open_uploads": sum(1 for b in infos if b.state == "UPLOADED"),
        "webhooks": outbox.counts(rt),
        "dead": [
            {
                "id": d["event"]["id"],
                "account": d["event"]["account"],
                "attempts": d.get("attempts", 0),
                "error": d.get("error", ""),
                "at": when(d.get("at_ms")),
            }
            for d in outbox.dead_letters(rt)[-50:]
        ],
        "now": when(time.time() * 1000),
    }


def counters(rt: Runtime, sort: str) -> dict[str, Any]:
    return {"rows": counter_rows(rt, sort), "sort": sort if sort in SORTS else "health", "sorts": SORTS}


def counter(rt: Runtime, counter_id: int, page: int, held_page: int = 1) -> dict[str, Any]:
    figures = counter_figures(rt, counter_id)
    uploads = counter_uploads(rt, counter_id, page=page, per_page=50)
    held, exact = held_calls(rt)
    for item in uploads["uploads"]:
        item["when"] = when(max(item["times"].values(), default=0))
    refused = [u for u in uploads["uploads"] if u.get("rejected_lines")]
    return {
        "counter_id": counter_id,
        "figures": figures,
        "oldest": when(figures["oldest_waiting_ms"]),
        "uploads": uploads,
        "pages": max((uploads["total"] + 49) // 50, 1),
        "held": paged(
            [
                {
                    "entry_id": h.entry_id,
                    "provider": h.provider,
                    "call_id": h.call_id,
                    "reason": h.reason,
                    "at": when(h.held_at_ms),
                }
                for h in held
                if h.counter_id == counter_id
            ],
            held_page,
        ),
        "held_exact": exact,
        "refused": refused,
    }


def call(rt: Runtime, provider: str, call_id: str) -> dict[str, Any]:
    if not provider or not call_id:
        return {"asked": False}
    if len(provider) > 256 or len(call_id) > 256:
        return {"asked": True, "error": "provider and call id: at most 256 characters each"}
    found = where_call(rt, provider, call_id).to_dict()
    times = [(name, when(value)) for name, value in found.get("times", {}).items()]
    return {"asked": True, "found": found, "times": times}


def quarantine(rt: Runtime) -> dict[str, Any]:
    items = []
    for info in overview.quarantined(rt):
        record = info.record
        items.append(
            {
                "batch_id": info.batch_id,
                "counter_id": info.counter_id,
                "kind": info.kind,
                "rows": record.get("rows", ""),
                "reason": record.get("reason", ""),
                "at": when(info.when_ms),
            }
        )
    return {"items": items}


def send_upload(settings: Settings, batch_id: str) -> bool:
    """Send a replayed batch's upload task now; if the broker refuses, the sweeper sends it later."""
    from kombu.exceptions import OperationalError  # noqa: PLC0415

    from worker.app import create_app  # noqa: PLC0415 - only the replay button needs Celery

    try:
        create_app(settings).send_task("calltrack.upload_batch", args=(batch_id,))
    except OperationalError:
        return False
    return True
