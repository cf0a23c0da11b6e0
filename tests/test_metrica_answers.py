"""Metrica as its reference documents it, against the emulator over HTTP: each kind on its documented
endpoints, every documented answer shape read, an unreadable answer to a post an unknown outcome (adopted
by comment, never posted twice, never quarantined), and chats columns only as the reference names them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from config.settings import Settings
from emulator.server import RunningEmulator
from tests.helpers import batch_record, make_call, stored_rows
from tests.pipeline import running_emulator
from worker.delivery import uploader
from worker.delivery.csvfile import encode_row
from worker.delivery.drain import drain
from worker.delivery.uploader import UploadFailed, UploadOutcome
from worker.errors import UnreadableAnswerError
from worker.model.kinds import CALLS, CHATS, CONVERSIONS, IdType, KindSpec, UploadKind
from worker.runtime import Runtime

SPECS = {UploadKind.CALLS: CALLS, UploadKind.CONVERSIONS: CONVERSIONS, UploadKind.CHATS: CHATS}


@pytest.fixture
def rt(emulator: RunningEmulator, make_settings: Callable[..., Settings]) -> Iterator[Runtime]:
    emulator.admin.reset()
    # No restore check (worker/delivery/restore.py): its list request would take the answers scripted here.
    runtime = Runtime(
        make_settings(
            metrica_base_url=emulator.base_url, upload_lock_seconds=15, counter_setup="off", restore_check=False
        )
    )
    yield runtime
    runtime.close()


def _ago(seconds: int) -> int:
    return int(datetime.now(UTC).timestamp()) - seconds


def _event(kind: UploadKind, counter: int, n: int, **extra: Any) -> dict[str, Any]:
    if kind is UploadKind.CALLS:
        return make_call(counter, n, **extra)
    if kind is UploadKind.CONVERSIONS:
        return {"counter_id": counter, "conversion_id": f"o{n}", "ClientId": str(10**15 + n), "Target": "paid",
                "DateTime": _ago(3600 + n), **extra}  # fmt: skip
    return {"counter_id": counter, "chat_id": f"c{n}", "DateTime": _ago(1800 + n), "ChatPlatform": "telegram",
            "ChatUsername": f"@u{n}", "ClientID": str(10**15 + n), **extra}  # fmt: skip


def seal(rt: Runtime, kind: UploadKind, counter: int = 101, n: int = 3, **extra: Any) -> str:
    result = rt.producer.submit([_event(kind, counter, i, **extra) for i in range(n)], kind)
    assert len(result.accepted) == n, result
    (batch_id,) = drain(rt, seal_all=True).sealed
    return str(batch_id)


def with_comment(emulator: RunningEmulator, batch_id: str) -> list[dict[str, Any]]:
    return [u for u in emulator.admin.uploads() if u["comment"] == batch_id]


def test_each_kind_on_the_endpoints_its_pages_document(rt: Runtime, emulator: RunningEmulator) -> None:
    batches = {kind: seal(rt, kind) for kind in UploadKind}
    for batch_id in batches.values():
        assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
    counts = emulator.admin.stats()["counts"]
    assert counts["path.upload_calls"] == 1 and counts["path.upload"] == 2
    (chats,) = with_comment(emulator, batches[UploadKind.CHATS])
    assert chats["type"] == "CHATS"
    token = rt.accounts.token_for(101)
    assert token is not None
    for kind, spec in SPECS.items():
        upload_id = int(batch_record(rt, batches[kind])["upload_id"])
        assert rt.metrica.uploading(spec, 101, token, upload_id).comment == batches[kind]
        assert [u.comment for u in rt.metrica.uploadings(spec, 101, token)] == [batches[kind]]  # its kind only
    counts = emulator.admin.stats()["counts"]
    assert counts["path.calls_uploading/{upload_id}"] == 1 and counts["path.calls_uploadings"] == 1
    assert counts["path.uploading/{upload_id}"] == 1 and counts["path.uploadings/{upload_id}"] == 1
    assert counts["path.uploadings"] == 2


@pytest.mark.parametrize("kind", list(UploadKind))
@pytest.mark.parametrize("shape", ["uploading", "uploadings", "untyped"])
def test_every_documented_answer_shape_is_read(
    rt: Runtime, emulator: RunningEmulator, kind: UploadKind, shape: str
) -> None:
    batch_id = seal(rt, kind)
    spec: KindSpec = SPECS[kind]
    emulator.admin.script([{"shape": shape}], kind="upload")
    emulator.admin.script([{"shape": shape}], kind="status")
    emulator.admin.script([{"shape": "untyped"}], kind="list")
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
    upload_id = int(batch_record(rt, batch_id)["upload_id"])
    token = rt.accounts.token_for(101)
    assert token is not None
    assert rt.metrica.uploading(spec, 101, token, upload_id).id == upload_id
    listed = rt.metrica.uploadings(spec, 101, token)  # entries without type are kept
    assert [(u.id, u.type) for u in listed] == [(upload_id, "")]


@pytest.mark.parametrize("kind", [UploadKind.CALLS, UploadKind.CHATS])
@pytest.mark.parametrize("shape", ["unreadable", "not_json"])
def test_an_unreadable_answer_to_a_post_is_an_unknown_outcome_adopted_by_comment(
    rt: Runtime, emulator: RunningEmulator, kind: UploadKind, shape: str
) -> None:
    batch_id = seal(rt, kind)
    emulator.admin.script([{"shape": shape}], kind="upload")
    with pytest.raises(UploadFailed) as failed:
        uploader.upload_batch(rt, batch_id)
    assert isinstance(failed.value.error, UnreadableAnswerError) and failed.value.error.outcome_unknown
    assert batch_record(rt, batch_id)["state"] == "UPLOADING"  # never quarantined as a refusal
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.ADOPTED
    assert batch_record(rt, batch_id)["recorded_by"] == "adopted"
    assert len(with_comment(emulator, batch_id)) == 1


def test_an_unreadable_answer_before_storing_is_posted_again_once(rt: Runtime, emulator: RunningEmulator) -> None:
    # The answer shape says nothing: the list, not the answer, decides whether Metrica holds the file.
    batch_id = seal(rt, UploadKind.CALLS)
    emulator.admin.script([{"status": 200, "body": {"result": "ok"}}], kind="upload")  # stores nothing
    with pytest.raises(UploadFailed):
        uploader.upload_batch(rt, batch_id)
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
    assert len(with_comment(emulator, batch_id)) == 1


def test_chats_carry_only_the_columns_the_reference_names(rt: Runtime, emulator: RunningEmulator) -> None:
    batch_id = seal(rt, UploadKind.CHATS, Answered=1, Tag="vip")
    assert {r.get("Answered") for r in stored_rows(rt, batch_id)} == {"1"}  # the model keeps the data
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
    (upload,) = with_comment(emulator, batch_id)
    assert upload["columns"] == ["ClientID", "DateTime", "ChatPlatform", "ChatUsername"]
    assert "Answered" not in upload["rows"][0] and "Tag" not in upload["rows"][0]


def test_mixed_optional_columns_are_sealed_apart_so_no_file_has_an_empty_cell(
    rt: Runtime, emulator: RunningEmulator
) -> None:
    # Missed calls without a talk duration or price, answered ones with: interleaved in one stream.
    calls = [make_call(101, n) for n in range(6)]
    for call in calls[1::2]:
        del call["TalkDuration"], call["Price"]
    assert len(rt.producer.submit(calls).accepted) == 6
    sealed = drain(rt, seal_all=True).sealed
    assert len(sealed) == 2  # one batch per column set, each one file and one upload
    for batch_id in sealed:
        assert batch_record(rt, batch_id)["bucket"] == "101:calls:CLIENT_ID"  # the record's bucket is unchanged
        assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
        (upload,) = with_comment(emulator, batch_id)
        assert len(upload["rows"]) == 3
        assert all(value != "" for row in upload["rows"] for value in row.values())
    columns = sorted(len(u["columns"]) for u in emulator.admin.uploads(with_rows=False))
    assert columns[1] - columns[0] == 2  # TalkDuration and Price only in the answered calls' file


def test_a_buffer_opened_before_the_column_sets_is_still_sealed_and_sent(
    rt: Runtime, emulator: RunningEmulator
) -> None:
    # What the previous release left: one buffer per (counter, kind, id type), rows of two column sets.
    bucket = "101:calls:CLIENT_ID"
    shard = rt.keys.shard_of(101)
    rows = [
        encode_row(CALLS, IdType.CLIENT_ID, {"ClientId": "1", "DateTime": str(_ago(60)), "TalkDuration": "5"}),
        encode_row(CALLS, IdType.CLIENT_ID, {"ClientId": "2", "DateTime": str(_ago(60))}),
    ]
    rt.redis.rpush(rt.keys.buffer(shard, bucket), *rows)
    rt.redis.hset(rt.keys.buffer_bytes(shard), bucket, sum(len(r) + 1 for r in rows))
    rt.redis.zadd(rt.keys.due(shard), {bucket: 0})
    (batch_id,) = drain(rt, seal_all=True).sealed
    assert batch_record(rt, batch_id)["bucket"] == bucket and batch_record(rt, batch_id)["rows"] == "2"
    assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
    (upload,) = with_comment(emulator, batch_id)
    assert upload["line_quantity"] == 2


def test_the_unified_endpoint_for_calls_is_refused_by_the_strict_emulator(
    make_settings: Callable[..., Settings],
) -> None:
    # What the opt-in risks: a Metrica that takes only what its pages document refuses type=CALLS.
    with running_emulator(strict=True) as strict:
        runtime = Runtime(make_settings(metrica_base_url=strict.base_url, metrica_unified_endpoint=True,
                                        counter_setup="off"))  # fmt: skip
        try:
            batch_id = seal(runtime, UploadKind.CALLS)
            assert uploader.upload_batch(runtime, batch_id) is UploadOutcome.QUARANTINED
            assert "invalid_parameter" in batch_record(runtime, batch_id)["reason"]
            assert strict.admin.uploads() == []
        finally:
            runtime.close()


def test_the_old_legacy_setting_is_accepted_with_a_warning(make_settings: Callable[..., Settings]) -> None:
    runtime = Runtime(make_settings(metrica_legacy_endpoints=True))
    try:
        with capture_logs() as events:
            client = runtime.metrica
        assert client.unified is False  # the documented endpoints: what the old setting asked for
        (event,) = [e for e in events if e["event"] == "setting_deprecated"]
        assert event["setting"] == "CALLTRACK_METRICA_LEGACY_ENDPOINTS"
    finally:
        runtime.close()
