"""The held stream: calls that cannot become a Metrica row yet, kept with the reason until stored, dropped or expired.

Reasons: ``unknown_number`` (no routing entry for the tracking number) and ``no_identifier``
(no ClientId, UserId or Yclid yet). Each entry holds the reason, the normalised
:class:`worker.model.inbound.InboundCall` as JSON and when it was held. A provider that repeats a
webhook does not add a second entry: ``{held}:seen:<hash>`` remembers the call for the dedup
window. The stream holds at most ``held_max_calls``: beyond, new calls are refused (``HeldFullError``,
answered 503 and counted as ``calls_rejected{reason="held_full"}``), never stored without a bound.
Entries leave when the producer has taken the call (:mod:`worker.intake.service`), when an operator
drops them (:meth:`HeldCalls.drop`: ``ctl held drop``, ``DELETE /admin/v1/held/{id}``), when a replay
finds them ``too_old`` (a late call never becomes uploadable: dropped and counted, never re-held), and
when they are older than ``held_retention_days`` (:meth:`HeldCalls.expire`, run by the reconcile tick:
entries below the entry-id time, so late calls alone cannot fill the stream for good).

A call brought by a client's credential (``InboundCall.owner``, worker/intake/ownership.py) keeps that
account in the entry's ``owner`` field (a replay routes it only to that client's counters) and counts
in ``{held}:owners``: one client holds at most ``held_max_calls_per_account`` (``HeldAccountFullError``,
503 for that client only). Entries of before issue 22 have no ``owner``: read as an operator's call,
never counted per client. Every deletion goes through ``lua/held_release.lua``, which keeps the count.

``{held}:reasons`` counts the entries per reason's first word the same way (hold.lua adds, the release
takes off), so ``/metrics`` reads one hash, not the stream, on every scrape. What those scripts cannot
see (entries of a release before the counts, a restored backup) is put right by ``lua/held_recount.lua``,
which counts the stream again in one atomic step: ``/metrics`` runs it when the last one is over an
hour old (``{held}:recounted``), and the operator's figures (``ctl held stats``, the admin API) run it
every time, so they are exact.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from redis import Redis
from redis.commands.core import Script

from worker.dataplane.keys import Keys
from worker.dataplane.scripts import ScriptCall, run_many
from worker.delivery.producer import dedup_digest
from worker.errors import HeldAccountFullError, HeldFullError
from worker.model.inbound import InboundCall

UNKNOWN_NUMBER = "unknown_number"
NO_IDENTIFIER = "no_identifier"
TOO_OLD = "too_old"  # older than the join window, with late_calls=hold
NO_LEASE = "no_lease"  # a dynamic number no session held at the call's time, and no other identifier
REASONS = (UNKNOWN_NUMBER, NO_IDENTIFIER, TOO_OLD, NO_LEASE)
ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # a held entry id as Redis writes it: <ms>-<seq>
PAGE = 500  # entries read per XRANGE while dropping or expiring
RECOUNT_SECONDS = 3600  # how long /metrics trusts the kept per-reason counts before it recounts


@dataclass(frozen=True, slots=True)
class HeldCall:
    """One entry of the held stream."""

    entry_id: str
    reason: str
    held_at_ms: int
    call: InboundCall


class HeldCalls:
    """Adds, reads, replaces and deletes held calls."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        hold_script: Script,
        release_script: Script,
        recount_script: Script,
        *,
        seen_days: int,
        max_calls: int,
        max_per_account: int,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._seen_ttl = seen_days * 86_400
        self._max = max_calls
        self._max_per_account = max_per_account
        self._hold_once = hold_script  # worker/dataplane/lua/hold.lua, registered by worker/dataplane/scripts.py
        self._release = release_script  # worker/dataplane/lua/held_release.lua
        self._recount = recount_script  # worker/dataplane/lua/held_recount.lua

    def hold(self, items: Sequence[tuple[InboundCall, str]]) -> list[str | None]:
        """Add each (call, reason) unless that call was held before; one round trip. Entry ids or None.

        Raises ``HeldFullError`` when the stream holds ``held_max_calls``, ``HeldAccountFullError`` when
        the call's owner holds ``held_max_calls_per_account`` (the calls before it are kept).
        """
        if not items:
            return []
        now = str(int(time.time() * 1000))
        calls: list[ScriptCall] = [
            (
                self._hold_once,
                [
                    self._keys.held,
                    self._keys.held_seen(dedup_digest(call.tracking_key)),
                    self._keys.held_owners(),
                    self._keys.held_reasons(),
                ],
                [reason, call.to_json(), now, self._seen_ttl, self._max, call.owner or "", self._max_per_account],
            )
            for call, reason in items
        ]
        replies = run_many(self._redis, calls)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            if reply == "full":
                raise HeldFullError(
                    f"the held stream is full ({self._max} calls, CALLTRACK_HELD_MAX_CALLS): calls to unknown "
                    "numbers or without a visitor id are refused until held calls are replayed or removed"
                )
            if reply == "full_owner":
                raise HeldAccountFullError(
                    f"this client account's held calls are full ({self._max_per_account} calls, "
                    "CALLTRACK_HELD_MAX_CALLS_PER_ACCOUNT): its calls to unknown numbers or without a visitor id "
                    "are refused until its held calls are replayed or removed"
                )
        return [str(reply) if reply else None for reply in replies]

    def entries(self, *, count: int = 100, start: str = "-") -> list[HeldCall]:
        entries = cast(
            list[tuple[str, dict[str, str]]], self._redis.xrange(self._keys.held, min=start, max="+", count=count)
        )
        return [_entry(entry_id, fields) for entry_id, fields in entries]

    def get(self, entry_ids: Iterable[str]) -> list[HeldCall]:
        found: list[HeldCall] = []
        for entry_id in entry_ids:
            entries = cast(
                list[tuple[str, dict[str, str]]], self._redis.xrange(self._keys.held, min=entry_id, max=entry_id)
            )
            found.extend(_entry(eid, fields) for eid, fields in entries)
        return found

    def count(self) -> int:
        return int(self._redis.xlen(self._keys.held))

    def per_account(self) -> dict[str, int]:
        """Held calls per client account (calls of operator credentials are not counted here)."""
        raw = cast(dict[str, str], self._redis.hgetall(self._keys.held_owners()))
        return {account: int(count) for account, count in sorted(raw.items())}

    def release(self, entry_ids: Sequence[str]) -> int:
        """Delete entries whose calls the producer has taken (and take them off their owner's count)."""
        if not entry_ids:
            return 0
        return int(self._release(keys=self._release_keys(), args=list(entry_ids)))

    def _release_keys(self) -> list[str]:
        return [self._keys.held, self._keys.held_owners(), self._keys.held_reasons()]

    def drop_ids(self, entry_ids: Iterable[str]) -> list[HeldCall]:
        """Delete the entries named (through the release script); the ones that existed."""
        entries = self.get(entry_ids)
        self.release([e.entry_id for e in entries])
        return entries

    def drop(
        self,
        *,
        reason: str | None = None,
        counter_of: Callable[[set[str]], Mapping[str, str]] | None = None,
        counter: str | None = None,
        older_than_ms: int | None = None,
        limit: int = 100_000,
    ) -> list[HeldCall]:
        """Delete entries matching every filter given (reason's first word, counter, held before a time).

        ``counter_of`` maps tracking numbers to their routed counters in one look-up (for ``counter``).
        Scans at most ``limit`` entries from the oldest; returns the entries removed (through the
        release script, ``PAGE`` at a time).
        """
        end = "+" if older_than_ms is None else f"{max(older_than_ms - 1, 0)}"
        chosen = [
            entry
            for entry in (_entry(i, f) for i, f in _scan(self._redis, self._keys.held, end=end, limit=limit))
            if reason is None or reason_head(entry.reason) == reason
        ]
        if counter is not None:
            routed = (
                counter_of({e.call.tracking_number for e in chosen if e.call.tracking_number}) if counter_of else {}
            )
            chosen = [e for e in chosen if routed.get(e.call.tracking_number or "") == counter]
        for at in range(0, len(chosen), PAGE):
            self.release([e.entry_id for e in chosen[at : at + PAGE]])
        return chosen

    def expire(self, retention_days: int, *, now_ms: int | None = None) -> int:
        """Delete entries held longer than ``retention_days`` (by entry-id time); how many went."""
        min_ms = (now_ms if now_ms is not None else int(time.time() * 1000)) - retention_days * 86_400_000
        expired = 0
        while True:
            ids = [
                entry_id
                for entry_id, _ in cast(
                    list[tuple[str, dict[str, str]]],
                    self._redis.xrange(self._keys.held, min="-", max=f"{max(min_ms - 1, 0)}", count=PAGE),
                )
            ]
            if not ids:
                return expired
            expired += self.release(ids)

    def per_reason(self) -> dict[str, int]:
        """Held calls per reason's first word (``too_old``, ``unknown_number``...), counted from the
        stream now (which also puts the kept counts right)."""
        return recount(self._redis, self._keys, self._recount)

    def rehold(self, items: Sequence[tuple[HeldCall, InboundCall, str]]) -> None:
        """Replace entries whose reason or call changed (one transaction: add the new, delete the old).

        The new entry keeps the old one's owner, and counts for it before the old one's release
        takes it off, so the owner's count ends where it was.
        """
        if not items:
            return
        pipe = self._redis.pipeline(transaction=True)
        now = str(int(time.time() * 1000))
        owners = self._keys.held_owners()
        for old, call, reason in items:
            fields = {"reason": reason, "call": call.to_json(), "at": now}
            if old.call.owner is not None:
                fields["owner"] = old.call.owner
                pipe.hincrby(owners, old.call.owner, 1)
            pipe.hincrby(self._keys.held_reasons(), reason_head(reason), 1)
            pipe.xadd(self._keys.held, fields)  # type: ignore[arg-type]
            self._release(keys=self._release_keys(), args=[old.entry_id], client=pipe)
        pipe.execute()


def reason_counts(redis: Redis, keys: Keys, recount_script: Script) -> dict[str, int]:
    """Held calls per reason's first word as hold.lua and held_release.lua keep them (one HGETALL);
    recounted from the stream first when the last recount is over ``RECOUNT_SECONDS`` old."""
    if not redis.exists(keys.held_recounted()):
        return recount(redis, keys, recount_script)
    raw = cast(dict[str, str], redis.hgetall(keys.held_reasons()))
    return {reason: int(n) for reason, n in sorted(raw.items()) if int(n) > 0}


def recount(redis: Redis, keys: Keys, recount_script: Script) -> dict[str, int]:
    """Count the held stream per reason's first word now, in one atomic script, and keep the result."""
    flat = recount_script(
        keys=[keys.held, keys.held_reasons(), keys.held_recounted()], args=[RECOUNT_SECONDS], client=redis
    )
    pairs = cast(list[str], flat)
    return dict(sorted((str(pairs[i]), int(pairs[i + 1])) for i in range(0, len(pairs), 2)))


def _scan(redis: Redis, stream: str, *, end: str, limit: int) -> Iterator[tuple[str, dict[str, str]]]:
    """The stream's entries from the oldest up to ``end``, at most ``limit``, read ``PAGE`` at a time."""
    start = "-"
    scanned = 0
    while scanned < limit:
        page = cast(
            list[tuple[str, dict[str, str]]], redis.xrange(stream, min=start, max=end, count=min(PAGE, limit - scanned))
        )
        if not page:
            return
        scanned += len(page)
        yield from page
        start = "(" + page[-1][0]


def reason_head(reason: str) -> str:
    """A reason's first word: ``no_identifier (note)`` is ``no_identifier``."""
    return reason.split(" ", 1)[0] if reason else "unspecified"


def _entry(entry_id: str, fields: dict[str, str]) -> HeldCall:
    call = InboundCall.from_json(fields["call"], owner=fields.get("owner") or None)
    return HeldCall(entry_id, fields["reason"], int(fields.get("at", "0")), call)
