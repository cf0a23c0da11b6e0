"""The producer API: validate events (calls, offline conversions or chats) and return only once
Redis holds the accepted ones.

A chunk's accepted events become one entry per bucket (counter:kind:id type) of their counter's shard
stream (data format 3, ``lua/xadd_many.lua``): ``b`` the bucket, ``r`` the rows, each its CSV line with a
column mask (:mod:`worker.delivery.csvfile`), joined, ``l`` their lengths, ``d`` each event's digest of
(kind, counter, source, source id) for deduplication, 16 characters each; a call also carries, in
``f``/``v``/``w``, the digest of (provider, call id) and "|id column letter|identifier" (the counter is the
bucket's), which
drain keeps so a later conversion can find the call (:mod:`worker.intake.call_refs`). One round trip
per chunk, one script per shard, one ``XADD`` per bucket.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import structlog
from redis import Redis
from redis.exceptions import RedisError

from worker.dataplane.keys import Keys
from worker.dataplane.marks import call_ref_tail
from worker.dataplane.scripts import Scripts as ScriptSet
from worker.dataplane.steps import Scripts, Steps, blocking, run_sync
from worker.delivery.rows import FIRST_CALLER_BIT, Event, Prepared, prepare
from worker.errors import ProducerError
from worker.model.calls import Rejection, TimePolicy
from worker.model.kinds import UploadKind
from worker.model.phones import PhoneRegions
from worker.store import Durability, MemoryWatermark, check_durability, ensure_shard, pin_shards

log = structlog.get_logger(__name__)
PIPELINE_CHUNK = 1_000


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def dedup_digest(source: str) -> str:
    """A short, fixed-size key for "the same call": no provider data lands in a Redis key
    (URL-safe base64 of 12 bytes of BLAKE2b: 16 characters)."""
    digest = hashlib.blake2b(source.encode(), digest_size=12).digest()
    return binascii.b2a_base64(digest, newline=False).translate(_URLSAFE).decode()


def call_ref_digest(provider: str, call_id: str) -> str:
    """The key under which drain remembers a call for later conversions."""
    return dedup_digest(f"ref\x1f{provider}\x1f{call_id}")


NO_REF = "." * 16  # a row without a call ref in its group's refs (not a base64 character)
NO_CALLER = "." * 28  # a row without a caller in its group's callers


@dataclass(slots=True)
class _Group:
    """One bucket's events of a chunk: the arguments of one ``XADD`` in ``xadd_many.lua``."""

    bucket: str
    positions: list[int] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    callers: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)
    with_refs: bool = False
    with_callers: bool = False

    def args(self) -> list[str | bytes]:
        refs = "".join(self.refs) if self.with_refs else ""
        values = "".join(self.values) if self.with_refs else ""
        widths = ",".join(str(len(v) if v.isascii() else len(v.encode())) for v in self.values) if refs else ""
        callers = "".join(self.callers) if self.with_callers else ""
        return [self.bucket, str(len(self.rows)), "".join(self.digests), refs, values, widths, callers, *self.rows]


def group_args(
    chunk: Sequence[Prepared], marks: Sequence[tuple[str, str] | None], shard_of: Callable[[int], int]
) -> dict[int, list[_Group]]:
    """A chunk's events grouped per shard, then per bucket (in input order): what ``xadd_many.lua`` takes."""
    per_shard: dict[int, dict[str, _Group]] = {}
    by_bucket: dict[str, _Group] = {}  # the same groups by bucket alone (a bucket names its counter)
    for position, (item, mark) in enumerate(zip(chunk, marks, strict=True)):
        group = by_bucket.get(item.bucket)
        if group is None:
            group = by_bucket[item.bucket] = _Group(item.bucket)
            per_shard.setdefault(shard_of(item.counter_id), {})[item.bucket] = group
        group.positions.append(position)
        group.digests.append(dedup_digest(item.dedup_source))
        if item.call_ref is not None:
            provider, call_id, column, identifier = item.call_ref
            group.refs.append(call_ref_digest(provider, call_id))
            group.values.append(call_ref_tail(column, identifier))  # its counter is the bucket's
            group.with_refs = True
        else:
            group.refs.append(NO_REF)
            group.values.append("")
        if mark is not None:
            caller_key, call_mark = mark
            if len(caller_key) != 20 or len(call_mark) < 8:  # the script reads them at fixed widths
                raise ValueError("a caller mark is a 20-character caller digest and a call mark of 8 or more")
            group.callers.append(caller_key + call_mark[:8])
            group.with_callers = True
        else:
            group.callers.append(NO_CALLER)
        # FirstTimeCaller is decided from the caller history when there is a mark, whatever the event says.
        group.rows.append(item.row(mark is not None))
    return {shard: list(groups.values()) for shard, groups in per_shard.items()}


@dataclass(frozen=True, slots=True)
class Accepted:
    """An event Redis holds: its position in the input, its source's id and its stream entry
    (``<entry id>/<position in the entry>``: an entry holds a chunk's events of one bucket)."""

    index: int
    source_id: str
    entry_id: str


@dataclass(slots=True)
class SubmitResult:
    """What happened to each event of one submission."""

    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


class Producer:
    """Writes validated call events to the ingest streams."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        policy: TimePolicy,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        caller_ttl: int = 365 * 86_400,
        caller_period_days: int = 30,
        caller_buckets: int = 1024,
        regions: PhoneRegions | None = None,
        memory_watermark: float = 1.0,
        memory_check_seconds: float = 1.0,
        durability: Durability | None = None,
    ) -> None:
        self._durability = durability or Durability()
        self._caller_args = [caller_ttl, caller_period_days, caller_buckets]
        self.regions = regions or PhoneRegions()
        self._watermark = MemoryWatermark(redis, memory_watermark, memory_check_seconds)
        self._redis = redis
        self._keys = keys
        self._policy = policy
        self._clock = clock
        self._ready_shards: set[int] = set()
        self._scripts = ScriptSet(redis)

    @property
    def redis(self) -> Redis:
        """The synchronous client the producer writes with (:meth:`submit`)."""
        return self._redis

    def submit(
        self,
        events: Iterable[Mapping[str, Any] | Event | Prepared],
        kind: UploadKind = UploadKind.CALLS,
        *,
        callers: Sequence[tuple[str, str] | None] | None = None,
    ) -> SubmitResult:
        """Validate every event of ``kind``; store the valid ones; report the invalid ones with reasons.

        ``callers`` gives, per input event, the caller's history digest and call mark from
        :class:`worker.intake.callers.CallerHistory` (or None): FirstTimeCaller is then decided as the call
        is stored, whatever the event says.

        Raises ``ProducerError`` when Redis refuses a write (full, read-only, unreachable), or when
        its memory is above the producers' watermark (nothing is written then: retry later). Some
        events may be stored by then; submitting the whole input again is safe, since repeats of a
        call are dropped downstream.
        """
        return run_sync(self._redis, self.submit_steps(events, kind, callers=callers))

    def submit_steps(
        self,
        events: Iterable[Mapping[str, Any] | Event | Prepared],
        kind: UploadKind = UploadKind.CALLS,
        *,
        callers: Sequence[tuple[str, str] | None] | None = None,
    ) -> Steps[SubmitResult]:
        """:meth:`submit` as steps (worker/dataplane/steps.py), for a synchronous or an asynchronous runner.

        ``events`` may also hold rows the caller already checked (:class:`Prepared`, as the intake's
        fused check gives them): they are stored as they are."""
        prepared, rejected = prepare(events, kind, self._clock(), self._policy, self.regions)
        result = SubmitResult(rejected=rejected)
        if prepared:
            yield from blocking(self._check_memory, self._watermark.stale())
        for start in range(0, len(prepared), PIPELINE_CHUNK):
            chunk = prepared[start : start + PIPELINE_CHUNK]
            marks = [callers[item.index] if callers is not None else None for item in chunk]
            entry_ids = yield from self._write_steps(chunk, marks)
            result.accepted.extend(
                Accepted(item.index, item.source_id, entry_id) for item, entry_id in zip(chunk, entry_ids, strict=True)
            )
        if rejected:
            log.info("events_rejected", rejected=len(rejected), accepted=len(result.accepted))
        return result

    def _write_steps(self, chunk: Sequence[Prepared], marks: Sequence[tuple[str, str] | None]) -> Steps[list[str]]:
        """One ``xadd_many.lua`` call per shard, all in one round trip; the entry ids in input order
        (steps: the arguments built once, for either runner)."""
        per_shard = group_args(chunk, marks, self._keys.shard_of)
        for shard in per_shard:
            if shard not in self._ready_shards:
                yield from blocking(partial(self._prepare, shard))
        calls = [
            (
                self._scripts.xadd_many,
                [self._keys.stream(shard)],
                [*self._caller_args, FIRST_CALLER_BIT, *(arg for group in groups for arg in group.args())],
            )
            for shard, groups in per_shard.items()
        ]
        try:
            replies = yield Scripts(calls, self._durability.commands)
        except RedisError as error:
            raise ProducerError(f"Redis did not take the events: {type(error).__name__}: {error}") from None
        replies, acks = replies[: len(calls)], replies[len(calls) :]
        shortfall = self._durability.shortfall(acks)
        if shortfall is not None:
            raise ProducerError(f"{shortfall}: the events may be lost if Redis fails now; resubmitting is safe")
        failures = [reply for reply in replies if isinstance(reply, Exception)]
        if failures:
            stored = sum(
                len(group.rows)
                for groups, reply in zip(per_shard.values(), replies, strict=True)
                if not isinstance(reply, Exception)
                for group in groups
            )
            log.error("producer_write_failed", failed_shards=len(failures), stored=stored, error=str(failures[0]))
            raise ProducerError(
                f"Redis refused events of {len(failures)} of {len(replies)} shards: {failures[0]}; "
                "resubmitting is safe (repeats are dropped)"
            )
        entry_ids = [""] * len(chunk)
        for groups, ids in zip(per_shard.values(), replies, strict=True):
            for group, entry_id in zip(groups, ids, strict=True):
                for n, position in enumerate(group.positions):
                    entry_ids[position] = f"{entry_id}/{n}"
        return entry_ids

    def _check_memory(self) -> None:
        """Refuse new events above the watermark, so uploads always have room to free memory."""
        try:
            full = self._watermark.above()
        except RedisError as error:
            raise ProducerError(f"Redis is not usable: {type(error).__name__}: {error}") from None
        if full is not None:
            log.warning("producer_memory_watermark", used=full.used, maxmemory=full.limit)
            raise ProducerError(
                f"Redis memory is at {full.share():.0%} of maxmemory, above the producers' watermark: "
                "new calls are refused until uploads free memory; retry later"
            )

    def _prepare(self, shard: int) -> None:
        try:
            if not self._ready_shards:
                pin_shards(self._redis, self._keys)  # raises ShardCountError: another shard count
                check_durability(self._redis, self._durability.mode)  # raises StoreConfigError
            ensure_shard(self._redis, self._keys, shard)
        except RedisError as error:
            raise ProducerError(f"Redis is not usable: {type(error).__name__}: {error}") from None
        self._ready_shards.add(shard)
