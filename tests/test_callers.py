"""FirstTimeCaller from the caller history: per counter, decided as the call is stored, stable under
repeated delivery, and never with the caller's number in a key."""

from __future__ import annotations

import time
from typing import cast

from tests.helpers import make_call, stored_rows
from worker.delivery.drain import drain
from worker.intake.callers import CallerCall, CallerHistory
from worker.runtime import Runtime


def stored_ftc(rt: Runtime) -> dict[str, str]:
    result = drain(rt, seal_all=True)
    answers: dict[str, str] = {}
    for batch_id in result.sealed:
        for row in stored_rows(rt, batch_id):
            answers[row["CallTrackerURL"].rsplit("/", 1)[1]] = row.get("FirstTimeCaller", "")
    return answers


def test_first_call_is_first_however_often_it_is_delivered(runtime: Runtime) -> None:
    history = CallerHistory(runtime.redis, runtime.keys, days=365, secret=b"s")
    caller = "+79161234567"

    def submit(*calls: tuple[int, int]) -> None:
        events = [make_call(counter, n, FirstTimeCaller=1) for counter, n in calls]  # whatever was sent
        marks = [history.mark(CallerCall(counter, caller, f"api\x1fcall-{counter}-{n}")) for counter, n in calls]
        runtime.producer.submit(events, callers=[(m.key, m.mark) for m in marks])

    submit((101, 1), (101, 2), (202, 3))
    assert stored_ftc(runtime) == {"1": "1", "2": "0", "3": "1"}  # per counter
    submit((101, 2), (101, 1))  # delivered again: the same answers (and dropped as repeats)
    assert stored_ftc(runtime) == {}
    # One field per (counter, caller) in the shards' bucketed hashes, expiring whole, no number in them.
    keys = list(runtime.redis.scan_iter(match=f"{runtime.settings.namespace}:*:ch:*"))
    assert sum(int(runtime.redis.hlen(k)) for k in keys) == 2
    assert all("79161234567" not in k for k in keys)
    assert all(int(runtime.redis.ttl(k)) > 364 * 86_400 for k in keys)


def test_a_later_call_is_not_first_and_a_replay_keeps_its_mark(runtime: Runtime) -> None:
    history = CallerHistory(runtime.redis, runtime.keys, days=365, secret=None)
    first = history.mark(CallerCall(101, "+79160000001", "api\x1fcall-101-7"))
    second = history.mark(CallerCall(101, "+79160000001", "api\x1fcall-101-8"))
    runtime.producer.submit([make_call(101, 7)], callers=[(first.key, first.mark)])
    runtime.producer.submit([make_call(101, 8)], callers=[(second.key, second.mark)])
    assert stored_ftc(runtime) == {"7": "1", "8": "0"}
    # A replay of the first call (e.g. from the held stream) is still its caller's first call.
    again = history.mark(CallerCall(101, "+79160000001", "api\x1fcall-101-7"))
    assert again == first


def _age_history(rt: Runtime, periods: int) -> None:
    """Move every caller-history hash ``periods`` periods into the past, as time passing would."""
    for shard in range(rt.keys.shards):
        prefix = rt.keys.prefix(shard)
        table = cast(dict[str, str], rt.redis.hgetall(f"{prefix}:chn"))
        rt.redis.delete(f"{prefix}:chn")
        for period, n in table.items():
            if str(period).startswith("c"):
                continue
            rt.redis.hset(f"{prefix}:chn", str(int(period) - periods), n)
            for key in cast(list[str], list(rt.redis.scan_iter(match=f"{prefix}:ch:{period}:*"))):
                rt.redis.rename(key, f"{prefix}:ch:{int(period) - periods}:{key.rsplit(':', 1)[1]}")


def test_history_spans_periods_and_reads_the_one_key_history_of_before(runtime: Runtime) -> None:
    history = CallerHistory(runtime.redis, runtime.keys, days=365, secret=b"s")
    first = history.mark(CallerCall(101, "+79160000002", "api\x1fcall-101-20"))
    runtime.producer.submit([make_call(101, 20)], callers=[(first.key, first.mark)])
    assert stored_ftc(runtime) == {"20": "1"}
    _age_history(runtime, 6)  # half a year (6 periods of 30 days) later: still known, moved to now
    later = history.mark(CallerCall(101, "+79160000002", "api\x1fcall-101-21"))
    runtime.producer.submit([make_call(101, 21)], callers=[(later.key, later.mark)])
    assert stored_ftc(runtime) == {"21": "0"}
    _age_history(runtime, 6)  # the latest call is half a year old: still known
    # A replay of the first call (its mark), a year after it: still its caller's first call.
    runtime.producer.submit([make_call(101, 22)], callers=[(first.key, first.mark)])
    assert stored_ftc(runtime)["22"] == "1"
    # An upgraded shard: the one-key history of before issue 18 is read (and moved into the hashes).
    old = history.mark(CallerCall(101, "+79160000003", "api\x1fcall-101-30"))
    shard = runtime.keys.shard_of(101)
    runtime.redis.set(runtime.keys.caller(101, old.key), "AAAAAAAAAAAAAAAA", ex=86_400)
    runtime.redis.set(runtime.keys.dedup_since(shard), int(time.time() * 1000) - 1000)
    runtime.producer.submit([make_call(101, 30)], callers=[(old.key, old.mark)])
    assert stored_ftc(runtime) == {"30": "0"}  # the caller called before the upgrade
    assert not runtime.redis.exists(runtime.keys.caller(101, old.key))
