"""An ingest stream entry as Python reads it (the writer is ``lua/xadd_many.lua``, the consumer ``lua/drain.lua``).

Data format 3: an entry holds one bucket's events of a producer's chunk: ``b`` the bucket, ``r`` the rows
joined, ``l`` their lengths in bytes (',' between), ``d`` the dedup digests (16 characters each, joined),
and for calls ``f`` the call-ref digests (16 each, dots for none), ``v`` their values joined without
their counter (the bucket's: "|column|identifier", :func:`worker.dataplane.marks.call_ref_value`), ``w``
the values' lengths in bytes. Format 2 (still read after an upgrade): one event, ``b d r`` and a call's ``f v``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

DIGEST = 16  # characters of a dedup or call-ref digest (worker/delivery/producer.py dedup_digest)


def events_in(fields: Mapping[str, str]) -> int:
    """How many events the entry holds."""
    lengths = fields.get("l")
    return 1 if lengths is None else lengths.count(",") + 1


def events_waiting(length: int, tally: Sequence[str | None]) -> int:
    """How many events a stream holds, from its XLEN and its tally's ``e`` and ``n`` (``stream_tally``):
    format-2 entries hold one event each, grouped ones ``n`` in all."""
    grouped, events = (max(int(value or 0), 0) for value in tally)
    return max(length - grouped, 0) + events


def holds_digest(fields: Mapping[str, str], name: str, digest: str) -> bool:
    """Whether field ``name`` (``d`` or ``f``) lists ``digest``, in either format."""
    packed = fields.get(name, "")
    at = packed.find(digest)
    while at >= 0:
        if at % DIGEST == 0:
            return True
        at = packed.find(digest, at + 1)
    return False


def split(fields: Mapping[str, str]) -> list[dict[str, str]]:
    """The entry's events, each as a format-2 entry: ``b``, ``d``, ``r`` and a call's ``f`` and ``v``."""
    lengths = fields.get("l")
    if lengths is None:
        return [dict(fields)]
    rows, values = fields["r"].encode(), fields.get("v", "").encode()
    refs, widths = fields.get("f", ""), fields.get("w", "")
    width_of = [int(w) for w in widths.split(",")] if refs else []
    events: list[dict[str, str]] = []
    at = value_at = 0
    for n, length in enumerate(int(x) for x in lengths.split(",")):
        digest = fields["d"][n * DIGEST : (n + 1) * DIGEST]
        event = {"b": fields["b"], "d": digest, "r": rows[at : at + length].decode()}
        at += length
        if refs:
            ref = refs[n * DIGEST : (n + 1) * DIGEST]
            if not ref.startswith("."):
                tail = values[value_at : value_at + width_of[n]].decode()
                event["f"], event["v"] = ref, fields["b"].split(":", 1)[0] + tail
            value_at += width_of[n]
        events.append(event)
    return events
