"""Reading a sorted set of batches forward by (score, member), so no number of equal times can stall it.

The sweep's position in an index (``done:<shard>``, ``quarantine:<shard>``) is the last (score,
member) it passed: the next read starts strictly after it, in the set's own order (score, then
member), so 5,000 or 50,000 batches stamped within one minute are read page after page. The
position passes only entries older than ``OVERLAP_MS`` (statuses are stamped by many machines'
clocks: one stamped a little in the past may still arrive), so each sweep re-reads at most the last
minute, whose events are already known (recording is idempotent).

Stored as JSON ``[score, member]``; a plain number (the release before: ms, no member) is read as
that moment minus the overlap, as it was then.
"""

from __future__ import annotations

from typing import cast

import orjson
from redis import Redis

OVERLAP_MS = 60_000  # re-read this much before the cursor: statuses are stamped by many machines' clocks
Position = tuple[int, str]


def parse(raw: str | None, now_ms: int) -> Position:
    if raw is None:
        return (now_ms - OVERLAP_MS, "")  # no cursor yet (a first webhook): from now on, not the whole history
    if raw.startswith("["):
        score, member = orjson.loads(raw)
        return (int(score), str(member))
    return (int(raw) - OVERLAP_MS, "")


def dump(position: Position) -> str:
    return orjson.dumps(list(position)).decode()


def after(redis: Redis, key: str, position: Position, limit: int) -> list[tuple[str, int]]:
    """Up to ``limit`` (member, score) strictly after ``position``, in the set's order."""
    score, member = position
    if member:
        pipe = redis.pipeline(transaction=False)
        pipe.zrank(key, member)
        pipe.zscore(key, member)
        rank, current = pipe.execute()
        if rank is not None and current is not None and int(current) == score:
            found = cast(list[tuple[str, float]], redis.zrange(key, rank + 1, rank + limit, withscores=True))
            return [(m, int(s)) for m, s in found]
    # The position's member is gone (or there is none): read from its score, skipping what is not after it.
    out: list[tuple[str, int]] = []
    offset = 0
    while len(out) < limit:
        page = cast(
            list[tuple[str, float]],
            redis.zrangebyscore(key, score, "+inf", start=offset, num=limit, withscores=True),
        )
        out.extend((m, int(s)) for m, s in page if (int(s), m) > position)
        if len(page) < limit:
            break
        offset += len(page)
    return out[:limit]


def settled(found: list[tuple[str, int]], position: Position, now_ms: int) -> Position:
    """The new position: past every entry read that is older than the overlap (a prefix of ``found``)."""
    for member, score in found:
        if score > now_ms - OVERLAP_MS:
            break
        position = (score, member)
    return position
