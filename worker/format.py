"""The data plane's format version, pinned in Redis like the shard count, and its migrations.

``<ns>:format`` holds the version of what this namespace stores (keys, records, batch ids, buffers).
A process checks it before it touches the data plane (worker, beat, ingestion service, producer,
``ctl``): a version this code does not know (a newer release wrote it) is refused with one line naming
both; an older one this code can migrate from is migrated, online, by the first process that starts
(or by ``./scripts/ctl migrate``). Every step is idempotent and recorded in ``<ns>:format:steps``, so a
migration killed half-way is resumed by the next process; the version is written last.

Versions:

1  release v2026.11.30 (8bdd4de) and before: no version key. Recognised by a pinned shard count or a
   shard epoch without ``<ns>:format``. Bucketed dedup marks; a shard that began before them (release
   ebcc7b3) has ``seen:``/``ref:`` one-key marks, honoured only once the shard's ``ddsince`` is set.
2  release v2026.12.06 (8b5e634): buffers per column set, method-group quota keys, held calls per owner,
   new-style batch ids. The shard pin is stored negated (``-N``): a release of version 1 reads it as a
   shard count, finds it is not its own, and refuses to start (its line: ``... was started with -N
   shards``), so old code never runs on this format (a rollback is refused; README, "Upgrading").
3  this release: an ingest stream entry holds one bucket's events of a producer's chunk (``lua/xadd_many.lua``,
   :mod:`worker.dataplane.entries`), which a drain of version 2 would not read (it would trim such an
   entry unread). A release of version 2 checks ``<ns>:format`` before it touches the data and refuses
   version 3 (its line: ``... holds data format 3 but this release knows formats 1-2``); the pin stays
   negated, so version 1 refuses as before.

Migration 1 -> 2: every shard's ``ddsince`` is set if missing (the ms of the migration), so drain and
call refs read the old one-key marks for one dedup window from the first drain after the upgrade; then
the shard pin is negated; then the version is written. The other changes of version 2 read version 1's
records as they are (plain buckets, JSON rows, old batch ids, purpose quota keys).

Migration 2 -> 3: nothing is rewritten: drain reads the one-event entries of version 2 still in a stream
(and those an ingestion process of version 2 writes until it is rolled) beside the grouped ones. The step
``groups`` is recorded, then the version is written; like every migration it runs only while no process
of the older release is alive (its heartbeat), so no drain of version 2 ever meets a grouped entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import orjson
from redis import Redis

from worker.dataplane.keys import Keys
from worker.errors import FormatVersionError, OlderReleaseAliveError, ShardCountError

CURRENT = 3
# Versions this code runs on, and those it can migrate from (to CURRENT).
RUNS_ON = frozenset({CURRENT})
MIGRATES_FROM = frozenset({1, 2})
STEPS_TTL_SECONDS = 30 * 86400  # the record of a finished migration, kept for the operator a while


def _now_ms(redis: Redis) -> int:
    seconds, micros = redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def stored_version(redis: Redis, keys: Keys) -> int | None:
    """The namespace's format version; None for a namespace that holds no data plane yet."""
    value = redis.get(keys.format_version)
    if value is not None:
        return int(value)
    pin = redis.get(keys.shard_count)
    if pin is not None and int(pin) < 0:
        # The version key alone was lost (a 1 -> 2 migration killed before its last write; a 2 -> 3 one
        # keeps the key): versions 2 and 3 negate the pin, and this release reads both.
        return CURRENT
    if pin is not None or any(redis.exists(keys.epoch(shard)) for shard in range(keys.shards)):
        return 1  # the data of a release before format versions
    return None


def _known() -> str:
    versions = sorted(RUNS_ON | MIGRATES_FROM)
    return f"{versions[0]}-{versions[-1]}" if len(versions) > 1 else str(versions[0])


def refuse_unknown(redis: Redis, keys: Keys) -> int | None:
    """The stored version (None: fresh); ``FormatVersionError`` (one line) when this code does not know it."""
    version = stored_version(redis, keys)
    if version is not None and version not in RUNS_ON | MIGRATES_FROM:
        raise FormatVersionError(
            f"namespace {keys.namespace!r} holds data format {version} but this release knows formats {_known()} "
            f"(runs on {CURRENT}): start a release that knows format {version} (README, 'Upgrading')"
        )
    return version


def _check_shards(pin: int | None, keys: Keys) -> None:
    if pin is not None and abs(pin) != keys.shards:
        raise ShardCountError(
            f"CALLTRACK_SHARDS is {keys.shards} but namespace {keys.namespace!r} was started with {abs(pin)} "
            f"shards: set CALLTRACK_SHARDS={abs(pin)} (changing it needs a migration of the streams)"
        )


def _pin(redis: Redis, keys: Keys) -> int | None:
    value = redis.get(keys.shard_count)
    return None if value is None else int(value)


def _step(redis: Redis, keys: Keys, name: str, action: Callable[[int], object], log: Callable[[str], None]) -> None:
    """Run ``action(now_ms)`` unless the step is recorded as done; then record it."""
    if redis.hexists(keys.format_steps, name):
        return
    now = _now_ms(redis)
    action(now)
    redis.hset(keys.format_steps, name, now)
    log(f"migrated {name}")


def older_alive(redis: Redis, keys: Keys, alive_ms: int) -> list[str]:
    """Heartbeats (``role:node``) of processes of another format, heard within ``alive_ms``: a release
    before format versions writes none of its own (its heartbeat has no ``format``)."""
    now = _now_ms(redis)
    found = []
    for field, raw in cast(dict[str, str], redis.hgetall(keys.heartbeats)).items():
        try:
            data = orjson.loads(raw)
            at, version = int(data["at"]), data.get("format")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        if version != CURRENT and now - at < alive_ms:
            found.append(field)
    return sorted(found)


def _migrate_1_to_2(redis: Redis, keys: Keys, log: Callable[[str], None]) -> None:
    def since(shard: int) -> Callable[[int], object]:
        # Kept when set: a shard that always had bucketed marks has 0, a producer of version 1 set the rest.
        return lambda now: redis.set(keys.dedup_since(shard), now, nx=True)

    for shard in range(keys.shards):
        _step(redis, keys, f"ddsince:{shard}", since(shard), log)
    _step(redis, keys, "pin", lambda _: redis.set(keys.shard_count, -keys.shards), log)


def _migrate_2_to_3(redis: Redis, keys: Keys, log: Callable[[str], None]) -> None:
    # Nothing to rewrite: drain reads version 2's one-event entries beside the grouped ones.
    _step(redis, keys, "groups", lambda _: None, log)


def ensure_format(
    redis: Redis, keys: Keys, log: Callable[[str], None] = lambda _: None, *, alive_ms: int = 60_000
) -> int | None:
    """Check the format and pin the shard count; migrate an older format; write a fresh one.

    Returns the version found before (None: fresh). Raises ``FormatVersionError`` for an unknown
    version, ``ShardCountError`` for another shard count, and ``OlderReleaseAliveError`` when an older
    format would be migrated while a process of the older release was heard within ``alive_ms`` (its
    heartbeat): one line each, before anything is written.
    """
    found = refuse_unknown(redis, keys)
    _check_shards(_pin(redis, keys), keys)
    if found is None:
        redis.set(keys.shard_count, -keys.shards, nx=True)
        redis.set(keys.format_version, CURRENT, nx=True)
        _check_shards(_pin(redis, keys), keys)  # another process pinned first, with its own count
        refuse_unknown(redis, keys)
        return None
    if found == CURRENT:  # written last by a migration: one killed just before it left only the negated pin
        redis.set(keys.format_version, CURRENT, nx=True)
    if found in MIGRATES_FROM:
        alive = older_alive(redis, keys, alive_ms)
        if alive:
            raise OlderReleaseAliveError(
                f"namespace {keys.namespace!r} holds data format {found}, and {len(alive)} process(es) of an older "
                f"release are alive ({', '.join(alive[:5])}): stop them, then start this release or run "
                f"./scripts/ctl migrate (README, 'Upgrading'); nothing was migrated"
            )
        if found == 1:
            _migrate_1_to_2(redis, keys, log)
        _migrate_2_to_3(redis, keys, log)
        redis.set(keys.format_version, CURRENT)
        redis.expire(keys.format_steps, STEPS_TTL_SECONDS)
        log(f"format {found} -> {CURRENT}")
    return found
