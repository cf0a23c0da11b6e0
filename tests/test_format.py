"""The data format version pinned in Redis (worker/format.py): fresh install, migration from the release
before format versions, resumption after a kill, and refusal of a format this release does not know."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import orjson
import pytest
from click.testing import CliRunner
from redis import Redis

from config.settings import Settings
from ctl.__main__ import main
from ctl.context import Context
from tests.helpers import make_call
from worker.app import refuse_another_shard_count
from worker.dataplane.entries import split
from worker.dataplane.keys import Keys
from worker.delivery.drain import drain_shard
from worker.delivery.producer import call_ref_digest
from worker.errors import FormatVersionError, OlderReleaseAliveError, ShardCountError
from worker.format import CURRENT, ensure_format, stored_version
from worker.runtime import Runtime


def _version_1_store(redis: Redis, keys: Keys) -> None:
    """What release v2026.11.30 leaves: a positive shard pin, epochs, ``ddsince`` on shard 0 only
    (shard 1 began before bucketed marks and was never touched by a producer of v2026.11.30)."""
    redis.set(keys.shard_count, keys.shards)
    for shard in range(keys.shards):
        redis.set(keys.epoch(shard), f"ep{shard}")
    redis.set(keys.dedup_since(0), 0)
    redis.set(keys.call_ref(1, "abcd"), "1|y|x")  # a one-key mark of release ebcc7b3


def test_a_fresh_namespace_gets_the_current_format_and_a_negated_pin(redis: Redis, namespace: str) -> None:
    keys = Keys(namespace, 3)
    assert stored_version(redis, keys) is None
    assert ensure_format(redis, keys) is None
    assert redis.get(keys.format_version) == str(CURRENT)
    assert redis.get(keys.shard_count) == "-3"
    assert ensure_format(redis, keys) == CURRENT  # a second process: nothing to do
    with pytest.raises(ShardCountError, match=r"CALLTRACK_SHARDS is 2 .* started with 3 shards"):
        ensure_format(redis, Keys(namespace, 2))


def test_a_store_of_the_release_before_versions_is_migrated_once(redis: Redis, namespace: str) -> None:
    keys = Keys(namespace, 2)
    _version_1_store(redis, keys)
    assert stored_version(redis, keys) == 1
    lines: list[str] = []
    assert ensure_format(redis, keys, lines.append) == 1
    assert redis.get(keys.format_version) == str(CURRENT)
    assert redis.get(keys.shard_count) == "-2"
    assert redis.get(keys.dedup_since(0)) == "0"  # kept: this shard never had one-key marks
    since = int(redis.get(keys.dedup_since(1)) or 0)
    assert since > 0  # the old marks of shard 1 are read from the first drain on
    assert 0 < redis.ttl(keys.format_steps) <= 30 * 86400
    assert lines[-1] == f"format 1 -> {CURRENT}"
    assert ensure_format(redis, keys) == CURRENT
    assert int(redis.get(keys.dedup_since(1)) or 0) == since


def test_a_migration_killed_half_way_is_resumed_not_repeated(redis: Redis, namespace: str) -> None:
    keys = Keys(namespace, 2)
    _version_1_store(redis, keys)
    redis.delete(keys.dedup_since(0))

    class Killed(Exception):
        pass

    def die_after_first(line: str) -> None:
        raise Killed(line)  # the process dies right after the first step is recorded

    with pytest.raises(Killed):
        ensure_format(redis, keys, die_after_first)
    assert stored_version(redis, keys) == 1  # the version is written last
    first = redis.get(keys.dedup_since(0))
    assert first is not None and redis.get(keys.dedup_since(1)) is None
    done: list[str] = []
    ensure_format(redis, keys, done.append)
    assert done == ["migrated ddsince:1", "migrated pin", "migrated groups", f"format 1 -> {CURRENT}"]
    assert redis.get(keys.dedup_since(0)) == first
    # Killed after the last step, before the version was written: the next process writes it.
    redis.delete(keys.format_version)
    assert ensure_format(redis, keys) == CURRENT and redis.get(keys.format_version) == str(CURRENT)


def _version_2_store(redis: Redis, keys: Keys) -> None:
    """What release v2026.12.06 (8b5e634) leaves: format 2, a negated pin, epochs, ``ddsince`` set."""
    redis.set(keys.format_version, 2)
    redis.set(keys.shard_count, -keys.shards)
    for shard in range(keys.shards):
        redis.set(keys.epoch(shard), f"ep{shard}")
        redis.set(keys.dedup_since(shard), 0)


def test_a_store_of_format_2_is_migrated_and_its_one_event_entries_drain(runtime: Runtime) -> None:
    """Format 3 groups a chunk's events per bucket in one stream entry; the one-event entries a release of
    format 2 left in a stream (or an ingestion process of it writes until rolled) drain beside them."""
    rt = runtime
    shard = rt.keys.shard_of(101)
    old, retried, new = make_call(101, 1), make_call(101, 1), make_call(101, 2)
    # A format-2 entry, as xadd_many.lua of v2026.12.06 wrote it: one call, b d r f v.
    assert rt.producer.submit([old]).accepted
    stream = rt.keys.stream(shard)
    ((entry_id, group),) = cast(list[tuple[str, dict[str, str]]], rt.redis.xrange(stream))
    (one,) = split(group)
    assert set(one) == {"b", "d", "r", "f", "v"}
    rt.redis.xdel(stream, entry_id)
    rt.redis.xadd(stream, one)  # type: ignore[arg-type]
    rt.redis.delete(rt.keys.format_version, rt.keys.format_steps)
    _version_2_store(rt.redis, rt.keys)
    lines: list[str] = []
    assert ensure_format(rt.redis, rt.keys, lines.append) == 2
    assert lines == ["migrated groups", f"format 2 -> {CURRENT}"] and rt.redis.get(rt.keys.format_version) == "3"
    assert ensure_format(rt.redis, rt.keys) == CURRENT  # idempotent: nothing more to do
    assert rt.producer.submit([retried, new]).accepted  # grouped: one entry behind the old one
    assert rt.redis.xlen(rt.keys.stream(shard)) == 2
    result = drain_shard(rt, shard, seal_all=True)
    assert (result.read, result.repeats, len(result.sealed)) == (3, 1, 1)  # the retry of the old call dropped
    assert rt.redis.xlen(rt.keys.stream(shard)) == 0


def test_a_format_of_a_newer_release_is_refused_by_every_process(
    redis: Redis, namespace: str, make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings()
    keys = Keys(namespace, settings.shards)
    redis.set(keys.format_version, CURRENT + 1)
    with pytest.raises(FormatVersionError, match=rf"holds data format {CURRENT + 1} but this release knows"):
        ensure_format(redis, keys)
    assert redis.get(keys.shard_count) is None  # nothing written
    with pytest.raises(SystemExit) as exited:  # worker_init / beat_init / the ingestion service
        refuse_another_shard_count(settings)
    assert exited.value.code == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and f"format {CURRENT + 1}" in line and f"runs on {CURRENT}" in line
    result = CliRunner().invoke(main, ["status"], obj=Context(settings))
    assert result.exit_code == 1 and f"holds data format {CURRENT + 1}" in result.output
    rt = Runtime(settings)
    with pytest.raises(FormatVersionError):  # a producer in any process
        rt.producer.submit([make_call(101, 1)])
    rt.close()
    assert redis.get(rt.keys.stream(rt.keys.shard_of(101))) is None


def test_ctl_migrate_migrates_and_check_reports(
    redis: Redis, namespace: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    keys = Keys(namespace, settings.shards)
    _version_1_store(redis, keys)
    check = CliRunner().invoke(main, ["migrate", "--check", "--json"], obj=Context(settings))
    assert check.exit_code == 1 and '"found": 1' in check.stdout
    assert redis.get(keys.format_version) is None
    done = CliRunner().invoke(main, ["migrate", "--json"], obj=Context(settings))
    assert done.exit_code == 0, done.output
    assert '"migrated ddsince:1"' in done.stdout and redis.get(keys.format_version) == str(CURRENT)
    again = CliRunner().invoke(main, ["migrate", "--check"], obj=Context(settings))
    assert again.exit_code == 0


def test_no_migration_while_a_process_of_the_older_release_is_alive(redis: Redis, namespace: str) -> None:
    keys = Keys(namespace, 2)
    _version_1_store(redis, keys)
    now = int(redis.time()[0]) * 1000
    # The heartbeat of release v2026.11.30 (no format in it), and one of this release.
    redis.hset(keys.heartbeats, "worker:old@a", orjson.dumps({"at": now - 1000, "host": "a", "pid": 7}))
    redis.hset(keys.heartbeats, "worker:new@b", orjson.dumps({"at": now, "pid": 8, "format": CURRENT}))
    with pytest.raises(OlderReleaseAliveError, match=r"holds data format 1, and 1 process\(es\) .*\(worker:old@a\)"):
        ensure_format(redis, keys, alive_ms=15_000)
    assert redis.get(keys.format_version) is None and redis.get(keys.shard_count) == "2"  # nothing written
    assert redis.get(keys.dedup_since(1)) is None
    # Killed without a clean stop: its heartbeat stays, but once it is older than alive_ms, it is gone.
    redis.hset(keys.heartbeats, "worker:old@a", orjson.dumps({"at": now - 60_000, "host": "a", "pid": 7}))
    assert ensure_format(redis, keys, alive_ms=15_000) == 1
    assert redis.get(keys.format_version) == str(CURRENT)


def test_one_key_marks_of_before_bucketed_marks_are_honoured_from_the_first_drain_after_a_worker_starts(
    runtime: Runtime,
) -> None:
    """A shard that began before bucketed marks (release ebcc7b3) and that no producer of v2026.11.30
    touched has no ``ddsince``: the worker's start migrates the format, so drain reads its old marks."""
    rt = runtime
    call = make_call(101, 7)
    shard = rt.keys.shard_of(101)
    _version_1_store(rt.redis, rt.keys)
    rt.redis.delete(*(rt.keys.dedup_since(s) for s in range(rt.keys.shards)))
    # A call's one-key ref is its dedup mark ("counter|column|identifier"), stored by the old release.
    digest = call_ref_digest(call["provider"], call["call_id"])
    rt.redis.set(rt.keys.call_ref(shard, digest), f"101|ClientId|{call['ClientId']}")
    refuse_another_shard_count(rt.settings)  # what worker_init and beat_init run
    assert all(rt.redis.get(rt.keys.dedup_since(s)) for s in range(rt.keys.shards))
    assert rt.producer.submit([call]).accepted  # the provider retries it
    result = drain_shard(rt, shard, seal_all=True)
    assert (result.read, result.repeats, result.sealed) == (1, 1, [])


def test_doctor_names_the_data_format(redis: Redis, namespace: str, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    keys = Keys(namespace, settings.shards)
    _version_1_store(redis, keys)
    older = CliRunner().invoke(main, ["doctor", "--json"], obj=Context(settings))
    check = next(c for c in orjson.loads(older.stdout)["checks"] if c["name"] == "data format")
    assert check["status"] == "warn" and "ctl migrate" in check["detail"]
    redis.set(keys.format_version, CURRENT + 1)
    newer = CliRunner().invoke(main, ["doctor", "--json"], obj=Context(settings))
    check = next(c for c in orjson.loads(newer.stdout)["checks"] if c["name"] == "data format")
    assert check["status"] == "fail" and newer.exit_code == 1
