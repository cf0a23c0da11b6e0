"""Where a dedup mark or a call ref lives: the bucketed compact hashes drain.lua writes (issue 18).

Marks of one shard go into hashes per period (``dedup_period_days``) and bucket, so each hash keeps
Redis's compact listpack encoding; :func:`dedup_slot` computes the bucket and field exactly as
``lua/drain.lua`` does, :func:`dedup_periods` which periods a lookup reads. A call ref's value names
the call's counter, identifier column (one letter) and identifier; a conversion's or chat's mark
holds only its batch's sequence number (drain.lua; the nonce is kept per batch, ``<p>:bn:<period>``).
"""

from __future__ import annotations

import string

_REF_COLUMNS = {"ClientId": "C", "UserId": "U", "Yclid": "Y", "PurchaseId": "P"}
_REF_NAMES = {code: name for name, code in _REF_COLUMNS.items()}


_BASE36 = string.digits + string.ascii_lowercase
_PAIRS = [high + low for high in _BASE36 for low in _BASE36]  # two base-36 digits per division


def _to_base36(number: int) -> str:
    if number < 36:
        return _BASE36[number]
    pairs = []
    while number:
        number, rest = divmod(number, 1296)
        pairs.append(_PAIRS[rest])
    return "".join(reversed(pairs)).lstrip("0")


def call_ref_tail(column: str, identifier: str) -> str:
    """A call ref value without its counter: "|column letter|identifier" (:func:`call_ref_value`)."""
    code = _REF_COLUMNS.get(column, column)
    if identifier.isascii() and identifier.isdigit() and not identifier.startswith("0") and len(code) == 1:
        return f"|{code.lower()}|{_to_base36(int(identifier))}"
    return f"|{code}|{identifier}"


def call_ref_value(counter_id: int, column: str, identifier: str) -> str:
    """What drain keeps of an accepted call for a later conversion: "counter|column letter|identifier".

    A decimal identifier (a ClientId or Yclid: 16-20 digits) is kept in base 36 (11-13 characters)
    under the column's lowercase letter; it is kept for weeks per call (issue 18).
    """
    return f"{counter_id}{call_ref_tail(column, identifier)}"


def parse_call_ref(value: str) -> tuple[int, str, str]:
    """(counter, id column, identifier) of a call ref value."""
    counter, column, identifier = value.split("|", 2)
    if column.islower() and column.upper() in _REF_NAMES:
        return int(counter), _REF_NAMES[column.upper()], str(int(identifier, 36))
    return int(counter), _REF_NAMES.get(column, column), identifier


def dedup_periods(now_ms: int, window_seconds: int, period_days: int) -> list[int]:
    """The periods a lookup reads, newest first: every one that holds a day of the window."""
    day = now_ms // 86_400_000
    oldest = (day - -(-window_seconds // 86_400)) // period_days
    return list(range(day // period_days, oldest - 1, -1))


_B64 = {c: i for i, c in enumerate(string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_")}


def dedup_slot(digest: str, buckets: int) -> tuple[int, str]:
    """(bucket, field) of a mark (16 characters of base64) in a period of ``buckets`` hashes, as drain.lua
    computes them: the first 8 characters are the field, the next 4 (24 bits) pick the bucket."""
    value = 0
    for char in digest[8:12]:
        value = value * 64 + _B64[char]
    return value % buckets, digest[:8]
