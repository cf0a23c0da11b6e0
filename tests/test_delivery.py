"""Delivery guarantees, one mechanism at a time: error classes, quotas, dedup window, reconcile."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from pydantic import SecretStr

from config.settings import Settings
from emulator.config import Account
from emulator.server import RunningEmulator
from standalone.redis_server import RedisServer
from tests.helpers import batch_record, make_call, seal_batch, stream_events, wait_for
from tests.pipeline import running_emulator, running_worker
from worker.dataplane.entries import split
from worker.dataplane.ids import fingerprint
from worker.delivery import uploader
from worker.delivery.csvfile import row_cells
from worker.delivery.drain import drain, update_holds
from worker.delivery.producer import call_ref_digest, dedup_digest
from worker.delivery.quota import Purpose, QuotaExhausted, QuotaGate, UploadsPaused
from worker.delivery.reconciler import reconcile
from worker.delivery.uploader import UploadOutcome
from worker.errors import ProducerError, QuotaError
from worker.intake.call_refs import CallRef, find_call
from worker.model.conversions import validate_conversions
from worker.model.kinds import CALLS, IdType, UploadKind
from worker.runtime import Runtime
from worker.store import redis_now_ms

seal = seal_batch
state = batch_record


# --- 401/403 -------------------------------------------------------------------------------------


def test_rejected_token_pauses_its_counters_until_the_token_is_replaced(
    emulator: RunningEmulator, make_settings: Callable[..., Settings], namespace: str
) -> None:
    old = make_settings(metrica_base_url=emulator.base_url, metrica_counter_tokens={101: "revoked-token"})
    rt = Runtime(old)
    batch_id = seal(rt)
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.PAUSED
    assert state(rt, batch_id)["state"] == "SEALED"  # nothing stored: it waits, rows intact
    with pytest.raises(UploadsPaused):
        uploader.upload_batch(rt, batch_id)
    (login,) = QuotaGate(rt).view()
    assert login.paused and "invalid_token" in next(iter(login.paused.values()))
    assert "revoked-token" not in repr(rt.redis.hgetall(rt.keys.paused))
    rt.close()
    # The operator replaces the token: a new fingerprint, so uploads resume by themselves.
    fresh = Runtime(make_settings(metrica_base_url=emulator.base_url, metrica_counter_tokens={101: "demo-token"}))
    assert uploader.upload_batch(fresh, batch_id) is UploadOutcome.POSTED
    fresh.close()


def test_access_denied_pauses_only_that_counter(make_settings: Callable[..., Settings]) -> None:
    accounts = (Account("client-a", "a", frozenset({101})), Account("client-b", "b", frozenset({202})))
    with running_emulator(accounts=accounts) as emulator:
        settings = make_settings(metrica_base_url=emulator.base_url, metrica_token="client-a")
        rt = Runtime(settings)
        denied = seal(rt, counter=202)
        allowed = seal(rt, counter=101)
        assert uploader.upload_batch(rt, denied) is UploadOutcome.PAUSED
        assert uploader.upload_batch(rt, allowed) is UploadOutcome.POSTED
        paused = cast(dict[str, str], rt.redis.hgetall(rt.keys.paused))
        assert list(paused) == [f"{fingerprint(SecretStr('client-a'))}:202"]
        rt.close()


# --- 429 / 420 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [429, 420])
def test_metrica_quota_answer_leaves_the_batch_sealed(rt: Runtime, emulator: RunningEmulator, code: int) -> None:
    batch_id = seal(rt)
    emulator.admin.script([{"status": code, "error_type": "quota_requests_by_uid"}], kind="upload")
    with pytest.raises(QuotaError) as raised:
        uploader.upload_batch(rt, batch_id)
    assert raised.value.error_type == "quota_requests_by_uid"
    assert state(rt, batch_id)["state"] == "SEALED" and "failures" not in state(rt, batch_id)


def test_daily_quota_answer_stops_the_login_until_midnight(rt: Runtime) -> None:
    token = rt.settings.token_for(101)
    assert token is not None
    gate = QuotaGate(rt)
    wait = gate.exhaust_day(token)  # an upload's answer: the client_write group is spent
    assert 0 < wait <= 86_400
    with pytest.raises(QuotaExhausted) as raised, gate.permit(token, Purpose.UPLOAD):
        pass
    with gate.permit(token, Purpose.POLL):  # client_read is counted apart
        pass
    assert raised.value.quota == "daily" and raised.value.retry_after == pytest.approx(wait, abs=5)


# --- 5xx: capped retries -------------------------------------------------------------------------


def test_repeated_5xx_is_quarantined_after_the_retry_cap_through_the_worker(
    emulator: RunningEmulator, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(metrica_base_url=emulator.base_url, upload_max_retries=3)
    rt = Runtime(settings)
    emulator.admin.set_faults(backend_error_share=1.0, kinds="upload", counters=404)
    with running_worker(settings, tmp_path):
        rt.producer.submit([make_call(404, i) for i in range(3)])
        wait_for(
            lambda: any(state(rt, b).get("state") == "QUARANTINED" for b in _batches(rt)),
            timeout=60,
            what="the batch to be quarantined",
        )
    (batch_id,) = _batches(rt)
    record = state(rt, batch_id)
    assert record["failures"] == "3" and "503" in record["reason"]
    assert rt.redis.llen(rt.keys.rows(batch_id)) == 3
    emulator.admin.clear_faults()
    rt.close()


def test_failures_past_the_time_cap_give_up_even_below_the_count(
    rt: Runtime, emulator: RunningEmulator, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(metrica_base_url=emulator.base_url, upload_max_retry_seconds=0.5)
    emulator.admin.set_faults(backend_error_share=1.0, kinds="upload", counters=405)
    with running_worker(settings, tmp_path):
        rt.producer.submit([make_call(405, 1)])
        wait_for(
            lambda: any(state(rt, b).get("state") == "QUARANTINED" for b in _batches(rt)),
            timeout=60,
            what="quarantine by the time cap",
        )
    (batch_id,) = _batches(rt)
    assert int(state(rt, batch_id)["failures"]) < settings.upload_max_retries
    emulator.admin.clear_faults()


def _batches(rt: Runtime) -> list[str]:
    return [
        str(key).rsplit(":", 1)[1] for key in rt.redis.scan_iter(match=f"{rt.settings.namespace}:*:batch:*", count=1000)
    ]


# --- quotas --------------------------------------------------------------------------------------


def test_daily_budget_rolls_over_at_midnight_utc(make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings(quota_daily_per_login=2))
    token = SecretStr("some-token")
    now = [datetime(2030, 1, 1, 23, 59, 58, tzinfo=UTC)]
    gate = QuotaGate(rt, clock=lambda: now[0])
    for _ in range(2):  # Metrica's client_write group: uploads and setting switches
        with gate.permit(token, Purpose.UPLOAD):
            pass
    with pytest.raises(QuotaExhausted) as raised, gate.permit(token, Purpose.WRITE):
        pass
    assert raised.value.quota == "daily" and 1 <= raised.value.retry_after <= 3
    with gate.permit(token, Purpose.POLL), gate.permit(token, Purpose.READ):  # client_read has its own day
        pass
    with pytest.raises(QuotaExhausted), gate.permit(token, Purpose.POLL):
        pass
    now[0] += timedelta(seconds=3)  # 00:00:01 UTC
    with gate.permit(token, Purpose.UPLOAD):
        pass
    rt.close()


def _permits_in_one_second(rt: Runtime, gate: QuotaGate) -> tuple[str, QuotaExhausted | None, int]:
    """Three parallel permits and a refused fourth, two more, then a sixth from another login on the
    same IP: the refusals seen, and how many ms of Redis's clock the whole sequence took."""
    token = SecretStr("t")
    started = redis_now_ms(rt.redis)
    with (
        gate.permit(token, Purpose.POLL),
        gate.permit(token, Purpose.POLL),
        gate.permit(token, Purpose.POLL),
        pytest.raises(QuotaExhausted) as parallel,
        gate.permit(token, Purpose.POLL),
    ):
        pass
    for _ in range(2):
        with gate.permit(token, Purpose.POLL):
            pass
    sixth: QuotaExhausted | None = None
    try:
        with gate.permit(SecretStr("another login, same IP"), Purpose.POLL):
            pass
    except QuotaExhausted as error:
        sixth = error
    return parallel.value.quota, sixth, redis_now_ms(rt.redis) - started


def test_parallel_and_rate_permits(make_settings: Callable[..., Settings]) -> None:
    """Five requests per second per IP: a sixth inside one second (of Redis's clock, which the rate
    window uses) is refused. On a loaded machine the sequence may outlast its second: then the
    premise did not hold and it runs again (on a fresh window), instead of failing or passing by luck."""
    rt = Runtime(make_settings(quota_requests_per_second=5))
    gate = QuotaGate(rt)
    for _ in range(20):
        rt.redis.delete(rt.keys.quota_rate(rt.settings.egress_id))
        parallel, sixth, took_ms = _permits_in_one_second(rt, gate)
        assert parallel == "parallel"
        if took_ms < 1000:
            break
    else:
        pytest.fail("twenty tries each took a second or more: the rate window could not be tested")
    assert sixth is not None, f"a sixth request {took_ms} ms after the first was let through"
    assert sixth.quota == "rate" and 0 < sixth.retry_after <= 1
    rt.close()


def test_short_budget_makes_batches_grow_instead_of_sealing_by_age(make_settings: Callable[..., Settings]) -> None:
    # The first drain opens the buffer and sets its due time (Redis's clock); the test waits for that
    # clock to pass it (no fixed sleep), so the second drain surely finds the buffer due by age.
    rt = Runtime(make_settings(flush_max_age=0.2, flush_max_rows=5, quota_daily_per_login=100))
    token = rt.settings.token_for(101)
    assert token is not None
    gate = QuotaGate(rt)
    day = datetime.now(UTC).strftime("%Y%m%d")  # the uploads' count under its key of before issue 24: carried on
    rt.redis.set(rt.keys.quota_day_purpose(fingerprint(token), "upload", day), 95)
    rt.producer.submit([make_call(101, i) for i in range(3)])
    assert drain(rt).sealed == []
    assert update_holds(rt, gate) == 1
    due = [
        cast(list[tuple[str, float]], rt.redis.zrange(rt.keys.due(s), 0, -1, withscores=True))
        for s in range(rt.keys.shards)
    ]
    (due_ms,) = [score for buckets in due for _, score in buckets]
    wait_for(lambda: redis_now_ms(rt.redis) > due_ms, timeout=10, interval=0.05, what="the buffer's due time")
    assert drain(rt).sealed == []  # due by age, but held: it keeps growing
    rt.producer.submit([make_call(101, i) for i in range(3, 6)])
    sealed = drain(rt).sealed
    assert len(sealed) == 1 and state(rt, sealed[0])["rows"] == "5"  # full batches still go
    rt.close()


# --- dedup window ----------------------------------------------------------------------------------


def _age_marks(rt: Runtime, periods: int) -> int:
    """Move every dedup hash of the namespace ``periods`` periods into the past (as time passing would)."""
    moved = 0
    for shard in range(rt.keys.shards):
        sizes = {
            str(k): v for k, v in rt.redis.hgetall(rt.keys.dedup_sizes(shard)).items() if not str(k).startswith("c")
        }
        rt.redis.delete(rt.keys.dedup_sizes(shard))
        for period, n in sizes.items():
            rt.redis.hset(rt.keys.dedup_sizes(shard), str(int(period) - periods), n)
            for key in list(rt.redis.scan_iter(match=f"{rt.keys.prefix(shard)}:dd:{period}:*")):
                bucket = str(key).rsplit(":", 1)[1]
                rt.redis.rename(key, rt.keys.dedup_hash(shard, int(period) - periods, int(bucket)))
                moved += 1
    return moved


def test_duplicate_webhook_a_period_later_is_dropped(runtime: Runtime) -> None:
    """A mark written in an earlier period of the window is found: a lookup reads every period's hash."""
    call = make_call(101, 1, provider="twilio", call_id="CA" + "1" * 32)
    runtime.producer.submit([call])
    first = drain(runtime, seal_all=True)
    hashes = list(runtime.redis.scan_iter(match=f"{runtime.settings.namespace}:*:dd:*"))
    assert len(hashes) == 1 and runtime.redis.hlen(hashes[0]) == 1  # one field: the call's ref is its mark
    ttl = int(runtime.redis.ttl(hashes[0]))
    assert 22 * 86_400 < ttl <= (22 + runtime.settings.dedup_period_days + 1) * 86_400  # expires whole
    assert _age_marks(runtime, 2) == 1  # two periods (16 days) ago: still inside the 22-day window
    runtime.producer.submit([call])
    second = drain(runtime, seal_all=True)
    assert (first.repeats, len(first.sealed)) == (0, 1)
    assert (second.repeats, second.sealed) == (1, [])
    assert find_call(runtime, "twilio", "CA" + "1" * 32) is not None  # conversions find it too
    assert _age_marks(runtime, 2) == 1  # now past the window: the same call is accepted again
    assert find_call(runtime, "twilio", "CA" + "1" * 32) is None
    runtime.producer.submit([call])
    assert drain(runtime, seal_all=True).repeats == 0


def test_marks_written_as_keys_before_bucketing_are_read_for_one_window(runtime: Runtime) -> None:
    """An upgraded shard: one-key marks (``ref:``/``seen:``) of before issue 18 still drop repeats."""
    call = make_call(101, 2, provider="twilio", call_id="CA" + "2" * 32)
    conversion = {"counter_id": 101, "conversion_id": "order-7", "ClientId": "1", "Target": "paid",
                  "DateTime": call["DateTime"], "source": "crm"}  # fmt: skip
    shard = runtime.keys.shard_of(101)
    runtime.producer.submit([call])
    runtime.producer.submit([conversion], kind=UploadKind.CONVERSIONS)
    # What the version before wrote: the same digests, as keys of their own.
    ref = runtime.keys.call_ref(shard, call_ref_digest("twilio", "CA" + "2" * 32))
    runtime.redis.set(ref, "101|ClientId|" + call["ClientId"], ex=86_400)
    events, _ = validate_conversions([conversion], datetime.now(UTC), runtime.producer._policy)
    seen = f"{runtime.keys.prefix(shard)}:seen:{dedup_digest(events[0][1].dedup_source)}"
    runtime.redis.set(seen, "1", ex=86_400)
    runtime.redis.set(runtime.keys.dedup_since(shard), int(time.time() * 1000) - 1000)
    assert drain(runtime, seal_all=True).repeats == 2
    assert find_call(runtime, "twilio", "CA" + "2" * 32) == CallRef(101, "ClientId", call["ClientId"])
    runtime.redis.set(runtime.keys.dedup_since(shard), int(time.time() * 1000) - 23 * 86_400_000)
    runtime.producer.submit([call])
    assert drain(runtime, seal_all=True).repeats == 0  # a window after the upgrade: the old keys are not read


# --- reconcile -------------------------------------------------------------------------------------


def test_reconcile_records_rejected_lines_flags_overdue_and_backs_off(make_settings: Callable[..., Settings]) -> None:
    answers: list[dict[str, Any]] = []
    lists: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            comment = request.url.params["comment"]
            return httpx.Response(200, json={"uploading": {"id": 7, "status": "UPLOADED", "comment": comment}})
        lists.append(request.url.path)
        return httpx.Response(200, json={"uploadings": answers})

    settings = make_settings(
        reconcile_interval=5, final_status_timeout=0.001, reconcile_max_backoff=30, counter_setup="off"
    )
    rt = Runtime(settings, transport=httpx.MockTransport(handler))
    batch_id = seal(rt, n=4)
    shard = int(batch_id.split("S")[1].split("B")[0])
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED

    def interval_after_a_check() -> float:
        raw = cast(str | None, rt.redis.hget(rt.keys.recheck(shard), "101:calls"))
        if raw:  # due now, keeping the interval reached so far
            rt.redis.hset(rt.keys.recheck(shard), "101:calls", "0:" + raw.split(":")[1])
        before = len(lists)
        reconcile(rt)
        assert len(lists) == before + 1
        raw = cast(str, rt.redis.hget(rt.keys.recheck(shard), "101:calls"))
        return float(raw.split(":")[1])

    answers[:] = [{"id": 7, "status": "MATCHED", "comment": batch_id, "type": "CALLS"}]
    import time

    time.sleep(0.01)
    assert interval_after_a_check() == 5  # the status moved: check again soon
    assert state(rt, batch_id)["overdue"] == "1"  # not final past final_status_timeout
    assert reconcile(rt).checked == 0  # not due yet: no request at all
    assert [interval_after_a_check() for _ in range(4)] == [10, 20, 30, 30]  # no movement: back off, capped

    answers[:] = [
        {"id": 7, "status": "PROCESSED", "comment": batch_id, "source_quantity": 4, "line_quantity": 3, "type": "CALLS"}
    ]
    rt.redis.delete(rt.keys.recheck(shard))
    result = reconcile(rt)
    assert (result.final, result.short) == (1, 1)
    record = state(rt, batch_id)
    assert record["state"] == "PROCESSED" and record["rejected_lines"] == "1" and record["line_quantity"] == "3"
    rt.close()


def test_a_status_is_never_taken_from_another_files_upload(make_settings: Callable[..., Settings]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"uploading": {"id": 9, "status": "UPLOADED", "comment": "x"}})
        item = {"id": 9, "status": "PROCESSED", "comment": "CTzzS0B99", "type": "CALLS"}
        return httpx.Response(200, json={"uploadings": [item]})

    rt = Runtime(make_settings(), transport=httpx.MockTransport(handler))
    batch_id = seal(rt)
    uploader.upload_batch(rt, batch_id)
    assert reconcile(rt).final == 0 and state(rt, batch_id)["state"] == "UPLOADED"
    rt.close()


# --- a full Redis ----------------------------------------------------------------------------------


def test_full_redis_makes_the_producer_fail_loudly_and_keeps_what_it_holds(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with RedisServer(data_dir=tmp_path / "redis") as server:
        rt = Runtime(make_settings(redis_url=server.url, shards=1))
        rt.redis.config_set("maxmemory", "4mb")
        stored = 0
        with pytest.raises(ProducerError) as raised:
            for chunk in range(1000):
                result = rt.producer.submit([make_call(101, chunk * 500 + i, Tag="x" * 200) for i in range(500)])
                stored += len(result.accepted)
        assert "OOM" in str(raised.value) or "maxmemory" in str(raised.value)
        assert stored > 0
        assert rt.redis.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        # Nothing accepted was evicted: every acknowledged event is still in the stream.
        assert stream_events(rt, 0) >= stored
        first = split(cast(list[Any], rt.redis.xrange(rt.keys.stream(0), count=1))[0][1])[0]
        assert row_cells(CALLS, IdType.CLIENT_ID, first["r"])["DateTime"]  # whole, readable
        rt.close()


def test_a_permit_due_soon_is_waited_for_and_a_far_one_is_not(make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings(quota_requests_per_second=2))
    gate = QuotaGate(rt)
    token = SecretStr("t")
    for _ in range(2):
        with gate.permit(token, Purpose.UPLOAD):
            pass
    with pytest.raises(QuotaExhausted), gate.permit(token, Purpose.UPLOAD):  # no wait allowed
        pass
    with gate.permit(token, Purpose.UPLOAD, wait=1.5):  # the window frees within a second
        pass
    day = datetime.now(UTC).strftime("%Y%m%d")
    rt.redis.set(rt.keys.quota_day_purpose(fingerprint(token), "client_write", day), 10**6)  # uploads: client_write
    with pytest.raises(QuotaExhausted) as daily, gate.permit(token, Purpose.UPLOAD, wait=5):  # never waited for
        pass
    assert daily.value.quota == "daily"
    rt.close()


def test_quota_left_is_shown_per_purpose(make_settings: Callable[..., Settings]) -> None:
    """calltrack_quota_left{purpose}: uploads (client_write) and polls (client_read) each have their own day."""
    from worker.ops.quotas import quota_view

    rt = Runtime(make_settings(quota_daily_per_login=10, metrica_token="quota-view-token"))
    gate = QuotaGate(rt)
    token = SecretStr("quota-view-token")
    for purpose in (Purpose.UPLOAD, Purpose.UPLOAD, Purpose.UPLOAD, Purpose.POLL):
        with gate.permit(token, purpose):
            pass
    (view,) = [q for q in quota_view(rt.redis, rt.keys, rt.settings) if q.used_today]
    assert (view.used_today, view.left_today, view.left_for_uploads, view.left_for_polls) == (4, 16, 7, 9)
    assert view.used == {"client_read": 1, "client_write": 3}
    rt.close()
