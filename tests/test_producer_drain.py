"""Producer and drain against a real Redis: what is stored, how buffers are sealed, repeats dropped."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
from redis import Redis

from config.settings import Settings
from tests.helpers import make_call, stored_rows, stream_events
from worker.dataplane.entries import split
from worker.delivery.csvfile import row_cells
from worker.delivery.drain import drain, drain_shard
from worker.model.kinds import CALLS, IdType
from worker.ops.fleet import stream_lag
from worker.ops.status import where_call
from worker.runtime import Runtime


def all_keys(redis: Redis, namespace: str) -> set[str]:
    return set(cast(list[str], list(redis.scan_iter(match=f"{namespace}:*", count=1000))))


def batch(rt: Runtime, batch_id: str) -> dict[str, str]:
    return cast(dict[str, str], rt.redis.hgetall(rt.keys.batch(batch_id)))


def rows(rt: Runtime, batch_id: str) -> list[dict[str, str]]:
    return stored_rows(rt, batch_id)


def test_accepted_events_are_in_the_stream_when_submit_returns(runtime: Runtime) -> None:
    result = runtime.producer.submit([make_call(101, i) for i in range(50)])
    assert len(result.accepted) == 50 and not result.rejected
    shard = runtime.keys.shard_of(101)
    assert stream_events(runtime, shard) == 50
    group = cast(list[tuple[str, dict[str, str]]], runtime.redis.xrange(runtime.keys.stream(shard), count=1))[0][1]
    assert runtime.redis.xlen(runtime.keys.stream(shard)) == 1  # a chunk's events of one bucket: one entry
    entry = split(group)[0]
    assert entry["b"] == "101:calls:CLIENT_ID"
    row = row_cells(CALLS, IdType.CLIENT_ID, entry["r"])  # the row as its CSV line (worker/delivery/csvfile.py)
    assert row["PhoneNumber"] == "+79120000000" and row["ClientId"] == str(10**15)


def test_invalid_events_are_reported_and_nothing_of_them_is_stored(runtime: Runtime, namespace: str) -> None:
    bad = [make_call(101, 1, Currency="XXXX"), make_call(101, 2, ClientId="not-digits"), {"counter_id": 5}]
    result = runtime.producer.submit(bad)
    assert not result.accepted
    assert [r.index for r in result.rejected] == [0, 1, 2]
    assert "Currency" in result.rejected[0].reason and "ISO 4217" in result.rejected[0].reason
    assert all_keys(runtime.redis, namespace) == set()  # not even an empty stream


def test_mixed_submission_stores_only_the_valid_ones(runtime: Runtime) -> None:
    result = runtime.producer.submit([make_call(101, 1), make_call(101, 2, TalkDuration=-4), make_call(101, 3)])
    assert [a.index for a in result.accepted] == [0, 2]
    assert [r.index for r in result.rejected] == [1]
    assert stream_events(runtime, runtime.keys.shard_of(101)) == 2


def test_drain_groups_rows_per_counter_and_identifier_type(make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings(flush_max_age=60))
    events = [make_call(c, i, id_type="ClientId" if i % 2 else "Yclid") for c in (101, 202) for i in range(40)]
    rt.producer.submit(events)
    first = drain(rt)
    assert first.read == 80 and not first.sealed  # not full, not due: stays in open buffers
    for shard in range(rt.keys.shards):
        assert rt.redis.xlen(rt.keys.stream(shard)) == 0  # drained entries are trimmed off
        assert rt.redis.xinfo_stream(rt.keys.stream(shard))["groups"] == 0  # no consumer-group bookkeeping
    sealed = drain(rt, seal_all=True).sealed
    assert len(sealed) == 4
    buckets = sorted(batch(rt, b)["bucket"] for b in sealed)
    assert buckets == ["101:calls:CLIENT_ID", "101:calls:YCLID", "202:calls:CLIENT_ID", "202:calls:YCLID"]
    for batch_id in sealed:
        record = batch(rt, batch_id)
        assert record["state"] == "SEALED" and record["rows"] == "20"
        id_column = "ClientId" if record["bucket"].endswith("CLIENT_ID") else "Yclid"
        assert all(set(r) & {"ClientId", "Yclid", "UserId"} == {id_column} for r in rows(rt, batch_id))
    rt.close()


def test_buffer_is_sealed_at_max_rows_exactly(make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings(flush_max_rows=7, flush_max_age=60, drain_chunk=100))
    rt.producer.submit([make_call(101, i) for i in range(23)])
    result = drain(rt)
    assert [int(batch(rt, b)["rows"]) for b in result.sealed] == [7, 7, 7]
    rest = drain(rt, seal_all=True).sealed
    assert [int(batch(rt, b)["rows"]) for b in rest] == [2]
    rt.close()


def test_buffer_is_sealed_before_it_exceeds_max_bytes(make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings(flush_max_bytes=2048, flush_max_age=60))
    rt.producer.submit([make_call(101, i) for i in range(30)])
    sealed = drain(rt).sealed + drain(rt, seal_all=True).sealed
    assert sum(int(batch(rt, b)["rows"]) for b in sealed) == 30
    assert all(int(batch(rt, b)["bytes"]) <= 2048 for b in sealed)
    assert len(sealed) > 1
    rt.close()


def test_buffer_is_sealed_when_its_age_is_due(make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings(flush_max_age=0.3))
    rt.producer.submit([make_call(101, 1)])
    assert drain(rt).sealed == []
    import time

    time.sleep(0.4)
    assert len(drain(rt).sealed) == 1
    rt.close()


def test_repeated_call_ids_are_dropped_across_drains(runtime: Runtime) -> None:
    runtime.producer.submit([make_call(101, i) for i in range(10)])
    first = drain(runtime, seal_all=True)
    runtime.producer.submit([make_call(101, i) for i in range(5, 15)])  # 5 repeats, 5 new
    second = drain(runtime, seal_all=True)
    assert (first.read, first.repeats) == (10, 0)
    assert (second.read, second.repeats) == (10, 5)
    assert sum(int(batch(runtime, b)["rows"]) for b in first.sealed + second.sealed) == 15


def test_same_call_id_on_another_counter_is_not_a_repeat(runtime: Runtime) -> None:
    runtime.producer.submit([make_call(101, 1), {**make_call(202, 1), "call_id": "call-101-1"}])
    assert drain(runtime, seal_all=True).repeats == 0


def test_drain_recreates_a_lost_epoch(runtime: Runtime) -> None:
    runtime.producer.submit([make_call(101, 1)])
    shard = runtime.keys.shard_of(101)
    runtime.redis.delete(runtime.keys.epoch(shard))
    result = drain_shard(runtime, shard, seal_all=True)
    assert result.read == 1 and len(result.sealed) == 1


@pytest.mark.parametrize("shards", [1, 3])
def test_batch_ids_are_unique_and_carry_their_shard(make_settings: Callable[..., Settings], shards: int) -> None:
    rt = Runtime(make_settings(shards=shards, flush_max_rows=3))
    rt.producer.submit([make_call(c, i) for c in range(1, 30) for i in range(4)])
    sealed = drain(rt, seal_all=True).sealed
    assert len(sealed) == len(set(sealed))
    for batch_id in sealed:
        assert batch(rt, batch_id)["state"] == "SEALED"
        assert batch_id.isalnum()  # a valid comment for both upload kinds
    rt.close()


def test_scripts_forgotten_by_redis_are_loaded_again_and_nothing_runs_twice(runtime: Runtime) -> None:
    runtime.producer.submit([make_call(c, 0) for c in range(1, 9)])  # several shards, scripts loaded
    runtime.redis.script_flush()  # as after a Redis restart
    result = runtime.producer.submit([make_call(c, 1) for c in range(1, 9)])
    assert len(result.accepted) == 8
    total = sum(stream_events(runtime, s) for s in range(runtime.keys.shards))
    assert total == 16


def test_a_chunk_is_one_entry_per_bucket_and_rows_of_any_bytes_cross_it_whole(runtime: Runtime) -> None:
    """Format 3 (lua/xadd_many.lua): a chunk's events of one bucket share a stream entry, its rows joined and
    split by their lengths in bytes (the rules refuse control characters in cells today; the framing would
    carry them too); a cell may hold a quote, a comma, a pipe or any UTF-8."""
    rt = runtime
    tags = ["plain", "pipe|bar", 'a "quoted", cell', "Привет, мир ✓", "«ёлка»"]
    events = [make_call(101, i, Tag=tags[i % 5]) for i in range(20)]
    events += [make_call(101, 100 + i, id_type="UserId", UserId=f"пользователь|{i}") for i in range(5)]
    result = rt.producer.submit(events)
    assert len(result.accepted) == 25
    shard = rt.keys.shard_of(101)
    entries = cast(list[tuple[str, dict[str, str]]], rt.redis.xrange(rt.keys.stream(shard)))
    assert [fields["b"] for _, fields in entries] == ["101:calls:CLIENT_ID", "101:calls:USER_ID"]
    assert [a.entry_id for a in result.accepted] == [f"{entries[0][0]}/{n}" for n in range(20)] + [
        f"{entries[1][0]}/{n}" for n in range(5)
    ]
    events_read = [event for _, fields in entries for event in split(fields)]
    assert [row_cells(CALLS, IdType.CLIENT_ID, e["r"])["Tag"] for e in events_read[:20]] == [
        tags[i % 5] for i in range(20)
    ]
    assert [row_cells(CALLS, IdType.USER_ID, e["r"])["UserId"] for e in events_read[20:]] == [
        f"пользователь|{i}" for i in range(5)
    ]
    assert all(len(e["d"]) == 16 and len(e["f"]) == 16 for e in events_read)
    assert events_read[20]["v"] == "101|U|пользователь|0"
    before = [e["r"] for e in events_read]
    # The status API finds a call, conversion or chat anywhere in a group (its digest at a 16-aligned place).
    middle = events[13]
    assert where_call(rt, middle["provider"], middle["call_id"]).place == "stream"
    assert where_call(rt, middle["provider"], "no-such-call").place == "unknown"
    again = rt.producer.submit(events[:3])  # a retry: dropped by drain as repeats
    assert len(again.accepted) == 3
    drained = drain_shard(rt, shard, seal_all=True)
    assert (drained.read, drained.repeats) == (28, 3) and rt.redis.xlen(rt.keys.stream(shard)) == 0
    stored = [r for b in drained.sealed for r in cast(list[str], rt.redis.lrange(rt.keys.rows(b), 0, -1))]
    assert sorted(stored) == sorted(before)


def test_a_drain_run_takes_whole_entries_up_to_about_its_count(make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings(flush_max_age=60, drain_chunk=50))
    for chunk in range(4):  # four entries of 30 events each on counter 101's shard
        rt.producer.submit([make_call(101, chunk * 30 + i) for i in range(30)])
    shard = rt.keys.shard_of(101)
    # A one-event entry of format 2 (an ingestion process of the release before, until it is rolled).
    (one,) = split(cast(list[tuple[str, dict[str, str]]], rt.redis.xrange(rt.keys.stream(shard), count=1))[0][1])[:1]
    rt.redis.xadd(rt.keys.stream(shard), {**one, "d": "x" * 16})  # type: ignore[dict-item]

    def lag() -> int:  # what calltrack_stream_lag_calls and the console show: events, not entries
        return next(int(s["calls"]) for s in stream_lag(rt) if s["shard"] == shard)

    assert lag() == 121 == stream_events(rt, shard)
    first = drain_shard(rt, shard)
    assert first.read == 60 and stream_events(rt, shard) == 61 == lag()  # two whole entries: 50 reached in the 2nd
    assert [drain_shard(rt, shard).read for _ in range(3)] == [60, 1, 0] and lag() == 0
    rt.close()
