"""The upload step against the emulator over HTTP: each outcome, each error class, and no doubles."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from config.settings import Settings
from emulator.server import RunningEmulator
from tests.helpers import batch_record, seal_batch
from worker.delivery import uploader
from worker.delivery.quota import UploadsPaused
from worker.delivery.uploader import UploadFailed, UploadOutcome
from worker.errors import DeferredError, QuotaError, ServerError, TransportError
from worker.runtime import Runtime


@pytest.fixture
def rt(emulator: RunningEmulator, make_settings: Callable[..., Settings]) -> Iterator[Runtime]:
    emulator.admin.reset()
    runtime = Runtime(make_settings(metrica_base_url=emulator.base_url, upload_lock_seconds=15))
    yield runtime
    runtime.close()


def seal_one(rt: Runtime, counter: int = 101, n: int = 5) -> str:
    return seal_batch(rt, counter, n)


record = batch_record


def uploads_with_comment(emulator: RunningEmulator, batch_id: str) -> int:
    return sum(1 for u in emulator.admin.uploads(with_rows=False) if u["comment"] == batch_id)


def test_posted_once_and_a_repeat_does_nothing(rt: Runtime, emulator: RunningEmulator) -> None:
    batch_id = seal_one(rt)
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
    rec = record(rt, batch_id)
    assert rec["state"] == "UPLOADED" and rec["upload_id"] and rec["status"] == "UPLOADED"
    assert rt.redis.zscore(rt.keys.uploaded(0 if batch_id.find("S0B") > 0 else 1), batch_id) is not None
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.NOTHING_TO_DO
    assert uploads_with_comment(emulator, batch_id) == 1


def test_connection_dropped_after_store_is_adopted_not_reposted(rt: Runtime, emulator: RunningEmulator) -> None:
    batch_id = seal_one(rt)
    emulator.admin.script(["drop_after_store"], kind="upload")
    with pytest.raises(UploadFailed) as failed:
        uploader.upload_batch(rt, batch_id)
    assert isinstance(failed.value.error, TransportError) and failed.value.failures == 1
    assert record(rt, batch_id)["state"] == "UPLOADING"
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.ADOPTED
    assert record(rt, batch_id)["recorded_by"] == "adopted"
    assert uploads_with_comment(emulator, batch_id) == 1


def test_connection_dropped_before_store_is_posted_again(rt: Runtime, emulator: RunningEmulator) -> None:
    batch_id = seal_one(rt)
    emulator.admin.script(["drop_before_store"], kind="upload")
    with pytest.raises(UploadFailed) as failed:
        uploader.upload_batch(rt, batch_id)
    assert isinstance(failed.value.error, TransportError) and failed.value.failures == 1
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
    assert uploads_with_comment(emulator, batch_id) == 1


@pytest.mark.parametrize("status", [503, 504])
def test_server_error_looks_before_posting_again(rt: Runtime, emulator: RunningEmulator, status: int) -> None:
    batch_id = seal_one(rt)
    emulator.admin.script([status], kind="upload")
    with pytest.raises(UploadFailed) as failed:
        uploader.upload_batch(rt, batch_id)
    assert isinstance(failed.value.error, ServerError) and failed.value.error.status == status
    lists_before = emulator.admin.stats()["counts"].get("requests.list", 0)
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
    assert emulator.admin.stats()["counts"].get("requests.list", 0) == lists_before + 1
    assert uploads_with_comment(emulator, batch_id) == 1


def test_quota_answer_stores_nothing_so_the_next_attempt_posts_at_once(rt: Runtime, emulator: RunningEmulator) -> None:
    batch_id = seal_one(rt)
    emulator.admin.script([{"status": 429, "error_type": "quota_parallel_requests"}], kind="upload")
    with pytest.raises(QuotaError) as raised:
        uploader.upload_batch(rt, batch_id)
    assert raised.value.error_type == "quota_parallel_requests"
    assert record(rt, batch_id)["state"] == "SEALED"
    lists_before = emulator.admin.stats()["counts"].get("requests.list", 0)
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
    assert emulator.admin.stats()["counts"].get("requests.list", 0) == lists_before


def test_invalid_file_is_quarantined_with_metricas_message_and_rows_kept(
    rt: Runtime, emulator: RunningEmulator
) -> None:
    batch_id = seal_one(rt, n=4)
    emulator.admin.script(
        [{"status": 400, "error_type": "invalid_uploading", "message": "Line 2, column 3: bad"}], kind="upload"
    )
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.QUARANTINED
    rec = record(rt, batch_id)
    assert rec["state"] == "QUARANTINED" and "Line 2, column 3: bad" in rec["reason"]
    assert rt.redis.llen(rt.keys.rows(batch_id)) == 4
    shard = int(batch_id.split("S")[1].split("B")[0])
    assert rt.redis.zscore(rt.keys.quarantine(shard), batch_id) is not None
    assert rt.redis.zscore(rt.keys.sealed(shard), batch_id) is None
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.NOTHING_TO_DO


def test_counter_without_token_waits_and_posts_nowhere(
    emulator: RunningEmulator, make_settings: Callable[..., Settings]
) -> None:
    for start, settings in enumerate(
        (
            make_settings(metrica_base_url=emulator.base_url, metrica_counter_tokens={777: "demo-token"}),
            make_settings(metrica_emulator=False),  # no token and no emulator asked for
        )
    ):
        rt = Runtime(settings)
        batch_id = seal_batch(rt, 101, 5, start * 10)
        with pytest.raises(UploadsPaused, match="no Metrica token is configured for counter 101"):
            uploader.upload_batch(rt, batch_id)
        assert record(rt, batch_id)["state"] == "SEALED"  # waiting, visibly; nothing posted
        rt.close()
    assert emulator.admin.uploads(with_rows=False) == []


def test_busy_counter_defers(rt: Runtime) -> None:
    batch_id = seal_one(rt)
    shard = int(batch_id.split("S")[1].split("B")[0])
    rt.redis.set(rt.keys.lock(shard, 101), "999", px=5000)
    with pytest.raises(DeferredError) as raised:
        uploader.upload_batch(rt, batch_id)
    assert 0 < raised.value.retry_after <= 5


def test_attempt_of_a_dead_worker_waits_for_its_lease_then_adopts(rt: Runtime, emulator: RunningEmulator) -> None:
    batch_id = seal_one(rt)
    key = rt.keys.batch(batch_id)
    # A worker claimed the batch, posted, and died before recording (no 'ended' mark).
    rt.scripts.begin_upload(keys=[key], args=["1", uploader.now_ms()])
    emulator.admin.script(["pass"], kind="upload")
    token = rt.settings.token_for(101)
    assert token is not None
    from worker.delivery.csvfile import build_csv
    from worker.model.kinds import Bucket

    bucket = Bucket.decode(record(rt, batch_id)["bucket"])
    content = build_csv(bucket.spec, bucket.id_type, rt.redis.lrange(rt.keys.rows(batch_id), 0, -1))
    rt.metrica.upload(bucket.spec, 101, token, content, comment=batch_id)  # the dead worker's whole file
    with pytest.raises(DeferredError):
        uploader.upload_batch(rt, batch_id)  # its request might still be in flight
    rt.redis.hset(key, "attempt_at", uploader.now_ms() - 16_000)  # the lease has passed
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.ADOPTED
    assert uploads_with_comment(emulator, batch_id) == 1


def test_stale_uploader_cannot_record_over_a_newer_one(rt: Runtime) -> None:
    batch_id = seal_one(rt)
    shard = int(batch_id.split("S")[1].split("B")[0])
    key = rt.keys.batch(batch_id)
    rt.scripts.begin_upload(keys=[key], args=["1", uploader.now_ms()])
    rt.scripts.begin_upload(keys=[key], args=["2", uploader.now_ms()])  # a newer attempt took over
    index_keys = [key, rt.keys.sealed(shard), rt.keys.uploaded(shard)]
    assert rt.scripts.record_upload(keys=index_keys, args=[batch_id, "1", 5, "UPLOADED", 1, "posted"]) == 0
    assert record(rt, batch_id)["state"] == "UPLOADING"
    assert rt.scripts.record_upload(keys=index_keys, args=[batch_id, "2", 6, "UPLOADED", 1, "posted"]) == 1
    assert record(rt, batch_id)["upload_id"] == "6"


def test_give_up_adopts_when_metrica_holds_the_file_else_quarantines(rt: Runtime, emulator: RunningEmulator) -> None:
    stored = seal_one(rt, counter=101)
    emulator.admin.script(["drop_after_store"], kind="upload")
    with pytest.raises(UploadFailed) as raised:
        uploader.upload_batch(rt, stored)
    assert uploader.give_up(rt, stored, raised.value.error) is UploadOutcome.ADOPTED

    lost = seal_one(rt, counter=202)
    emulator.admin.script([503], kind="upload")
    with pytest.raises(UploadFailed) as raised_503:
        uploader.upload_batch(rt, lost)
    assert uploader.give_up(rt, lost, raised_503.value.error) is UploadOutcome.QUARANTINED
    assert "503" in record(rt, lost)["reason"]
    assert uploads_with_comment(emulator, lost) == 0


def test_rows_are_stored_as_csv_lines_and_a_file_joins_them(rt: Runtime, emulator: RunningEmulator) -> None:
    """Issue 18: a stored row is "<mask>,<cells>"; the file joins the lines, pads rows with fewer
    columns, and still reads rows stored as JSON before the change. The emulator parses the result."""
    import orjson

    from worker.delivery.csvfile import build_csv, encode_row, row_cells
    from worker.model.kinds import CALLS, IdType

    plain = {"ClientId": "1556018960000000001", "DateTime": "1764400000", "Tag": 'a,"b"'}
    full = {**plain, "ClientId": "1556018960000000002", "URL": "https://shop.example/?q=1,2", "FirstTimeCaller": "1"}
    stored = [encode_row(CALLS, IdType.CLIENT_ID, plain), encode_row(CALLS, IdType.CLIENT_ID, full)]
    assert stored[0] == '203,1556018960000000001,1764400000,"a,""b"""'  # bits 0, 1, 9: ClientId, DateTime, Tag
    assert [row_cells(CALLS, IdType.CLIENT_ID, s) for s in stored] == [plain, full]
    same = build_csv(CALLS, IdType.CLIENT_ID, [stored[0], stored[0]]).decode()
    assert same.splitlines() == ["ClientId,DateTime,Tag", stored[0][4:], stored[0][4:]]
    legacy = orjson.dumps({"ClientId": "1556018960000000003", "DateTime": "1764400000", "CallMissed": "1"})
    mixed = build_csv(CALLS, IdType.CLIENT_ID, [*stored, legacy]).decode()
    assert mixed.splitlines()[0] == "ClientId,DateTime,CallMissed,Tag,URL,FirstTimeCaller"
    token = rt.settings.token_for(101)
    assert token is not None
    rt.metrica.upload(CALLS, 101, token, mixed.encode(), comment="csvlines")
    rows = sorted(emulator.admin.rows(), key=lambda r: str(r["ClientId"]))
    assert [r["ClientId"] for r in rows] == [f"155601896000000000{n}" for n in (1, 2, 3)]
    assert rows[0]["Tag"] == 'a,"b"' and rows[1]["URL"] == "https://shop.example/?q=1,2"
