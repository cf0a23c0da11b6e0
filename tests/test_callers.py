"""FirstTimeCaller from the caller history: per counter, stable under repeated delivery."""

from __future__ import annotations

from worker.callers import CallerCall, CallerHistory
from worker.runtime import Runtime


def test_first_call_is_first_however_often_it_is_delivered(runtime: Runtime) -> None:
    history = CallerHistory(runtime.redis, runtime.keys, days=365, secret=b"s")
    first = CallerCall(101, "+79161234567", "twilio\x1fCA1")
    again = CallerCall(101, "+79161234567", "twilio\x1fCA2")
    other_counter = CallerCall(202, "+79161234567", "twilio\x1fCA3")
    assert history.first_time([first, again, other_counter]) == [True, False, True]
    assert history.first_time([again, first]) == [False, True]  # a replay keeps its answer
    keys = list(runtime.redis.scan_iter(match=f"{runtime.settings.namespace}:*caller*"))
    assert keys and all("79161234567" not in k for k in keys)
    assert all(int(runtime.redis.ttl(k)) > 364 * 86_400 for k in keys)
