"""Keys that may live without a TTL, each with why: beside the key table (:mod:`worker.dataplane.templates`).

Every other key of the namespace expires (issue 23, item 6): ``tests/test_key_retention.py`` runs a
short full pipeline, lists every key with ``TTL == -1`` and fails with its name unless a pattern
here matches it. A pattern is an ``fnmatch`` pattern of the name after ``<ns>:``.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

FOREVER: tuple[tuple[str, str], ...] = (
    # The deployment's own configuration and identity: there is no "later" for these.
    ("shards", "the shard count pin: a process with another count must refuse to start"),
    ("format", "the data format's version: a process that does not know it must refuse to start"),
    ("{s*}:epoch", "the shard's data identity, in every batch id: a new one would make ids collide"),
    ("{s*}:seq", "batch sequence: going back reuses numbers (the nonce keeps ids apart, restore.py reads it)"),
    ("{s*}:fence:*", "a counter's fencing-token sequence: going back would let a stale uploader record"),
    ("{s*}:ddsince", "when the shard began bucketed marks: decides whether the old one-key marks are read"),
    ("{s*}:ddn", "bucket count per live period (drain.lua drops a period's fields as it expires)"),
    ("{s*}:restored", "a restore waiting for the operator: kept until `ctl restore confirm` (then it expires)"),
    ("routing", "the routing table, edited by the operator"),
    ("{acct}:*", "the account registry (accounts, counters, removed, version, logins, API keys): operator data"),
    ("counter_setup", "one readiness field per counter (options switched on, goals): bounded by the counters"),
    ("{m}:counters", "metric counters since the deployment began (fixed label sets: bounded)"),
    # Work and indexes that are emptied or trimmed as the pipeline moves, not expired.
    ("{s*}:in", "the ingest stream: the drain trims what it has buffered (XTRIM MINID)"),
    ("{s*}:inn", "the ingest stream's tally of grouped entries and events: two counters, back to 0 when drained"),
    ("{s*}:buf:*", "an open buffer: sealed (renamed to rows) by size or age"),
    ("{s*}:bufm:*", "an open buffer's marks: renamed with it when it is sealed"),
    ("{s*}:bufbytes", "bytes per open buffer: a field leaves when its buffer is sealed"),
    ("{s*}:bufseq", "the seq each open buffer reserved: a field leaves when its buffer is sealed"),
    ("{s*}:due", "open buffers by seal time: a member leaves when its buffer is sealed"),
    ("{s*}:sealed", "batches waiting for an upload: a member leaves when it is uploaded"),
    ("{s*}:uploaded", "uploads waiting for a final status: a member leaves when it is final"),
    ("{s*}:quarantine", "batches waiting for the operator's replay or discard"),
    ("{s*}:done", "final batches: trimmed to the record retention (record_status.lua, retention.py)"),
    ("{s*}:recheck", "reconcile back-off per counter and kind: one field each, bounded"),
    ("{s*}:hold", "counters short of upload quota: rewritten whole by every drain's update"),
    ("{s*}:flushage", "per-counter flush ages published from the registry: bounded by the counters"),
    ("{s*}:pool:*", "a counter's dynamic numbers (operator data)"),
    ("{s*}:psess:*", "sessions holding a number: a field is replaced when its number is leased again"),
    ("{s*}:pholder:*", "the current holder of each number: one field per number"),
    ("{s*}:plog:*", "lease history: trimmed past the join window as leases are made (lease.lua)"),
    ("{s*}:phist:*", "lease history per number: trimmed past the join window as leases are made"),
    ("{s*}:pseq", "lease id sequence: going back would reuse lease ids"),
    ("{s*}:pexhausted", "times each counter's pool had no free number (a counter's tally)"),
    ("{held}:calls", "held calls: capped (held_max_calls), kept until the operator replays them"),
    ("{held}:owners", "held calls per client account: the cap's count, decremented on release"),
    ("{held}:reasons", "held calls per reason's first word: a field per reason word, decremented on release"),
    ("{n}:outbox", "webhook events not yet delivered: a field leaves when sent or dead"),
    ("{n}:pending", "when each waiting webhook event may be sent: leaves with the event"),
    ("{n}:sent", "delivered webhook events: trimmed after the dedup window (outbox.py)"),
    ("{n}:dead", "webhook dead letters: kept for the operator (ctl notify retry)"),
    ("{n}:cursor", "how far the webhook sweep read each index: one field per shard and index"),
    ("{n}:breaker", "each account's webhook breaker: bounded by the accounts"),
    ("{q}:paused", "tokens Metrica refused: kept until the token is replaced (ctl accounts)"),
    ("cdrpos:*", "a CDR file reader's position: one per file read"),
    # Other libraries' keys in the namespace (Celery's broker, redbeat's schedule).
    ("celery:*", "Celery's queues (emptied as tasks are taken), kombu's bindings (one per queue)"),
    ("redbeat:*", "redbeat's schedule: one entry per periodic task, and its index"),
)


def kept_forever_by_accident(names: Iterable[str], namespace: str) -> list[str]:
    """The names among ``names`` (keys without a TTL) that no pattern of :data:`FOREVER` allows."""
    prefix = f"{namespace}:"
    return sorted(
        name for name in names if not any(fnmatchcase(name.removeprefix(prefix), pattern) for pattern, _ in FOREVER)
    )
