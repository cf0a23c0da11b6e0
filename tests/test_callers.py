"""FirstTimeCaller from the caller history: per counter, decided as the call is stored, stable under
repeated delivery, and never with the caller's number in a key."""

from __future__ import annotations

from typing import cast

import orjson

from tests.helpers import make_call
from worker.delivery.drain import drain
from worker.intake.callers import CallerCall, CallerHistory
from worker.runtime import Runtime


def stored_ftc(rt: Runtime) -> dict[str, str]:
    result = drain(rt, seal_all=True)
    answers: dict[str, str] = {}
    for batch_id in result.sealed:
        for raw in cast(list[str], rt.redis.lrange(rt.keys.rows(batch_id), 0, -1)):
            row = orjson.loads(raw)
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
    keys = list(runtime.redis.scan_iter(match=f"{runtime.settings.namespace}:*caller*"))
    assert len(keys) == 2 and all("79161234567" not in k for k in keys)
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
