"""The emulator on the points where it follows Metrica's reference pages (docs/emulator.md's table): answer
shapes per path, the ``type`` of list entries per path, and strict mode refusing what no page documents."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from emulator.config import EmulatorConfig
from emulator.server import RunningEmulator
from tests.emulator.support import BASE_CONFIG, PAST, PREFIX, Metrica, calls_csv, error_of

pytest_plugins = ["tests.emulator.fixtures"]

CHATS = f"DateTime,ChatPlatform,ChatUsername,ClientID\n{PAST},telegram,@ann,11\n"
CHATS_ANSWERED = f"DateTime,ChatPlatform,ChatUsername,Answered,Tag\n{PAST},telegram,@ann,1,vip\n"
CALLS = calls_csv(f"1001,{PAST}", header="ClientId,DateTime")
CONVERSIONS = calls_csv(f"1,goal,{PAST}", header="ClientId,Target,DateTime")


def _post(metrica: Metrica, counter: int, text: str, path: str = "upload", **params: str) -> httpx.Response:
    return metrica.http.post(
        f"{PREFIX.format(counter=counter)}/{path}",
        params={"comment": "c1", **params},
        files={"file": ("f.csv", text.encode(), "text/csv")},
        headers=metrica.headers(),
    )


def _get(metrica: Metrica, counter: int, path: str) -> httpx.Response:
    return metrica.http.get(f"{PREFIX.format(counter=counter)}/{path}", headers=metrica.headers())


def test_each_path_answers_in_its_pages_shape(metrica: Metrica) -> None:
    calls = _post(metrica, 101, CALLS, "upload_calls").json()
    conversion = _post(metrica, 101, CONVERSIONS).json()
    chats = _post(metrica, 101, CHATS, type="CHATS").json()
    # uploadCalls and upload_1: the object under "uploading"; upload_chats: a list of one.
    assert set(calls) == {"uploading"} and "type" not in calls["uploading"]
    assert conversion["uploading"]["type"] == "BASIC"
    (chat,) = chats["uploadings"]
    assert chat["type"] == "CHATS"
    # findById_chats (uploadings/{id}) a list of one; findById_1 and findCallUploadingById an object.
    assert _get(metrica, 101, f"uploadings/{chat['id']}").json() == {"uploadings": [chat]}
    assert _get(metrica, 101, f"uploading/{conversion['uploading']['id']}").json()["uploading"]["type"] == "BASIC"
    by_id = _get(metrica, 101, f"calls_uploading/{calls['uploading']['id']}").json()["uploading"]
    assert "type" not in by_id
    listed = _get(metrica, 101, "calls_uploadings").json()["uploadings"]
    assert [u["id"] for u in listed] == [calls["uploading"]["id"]] and "type" not in listed[0]


def test_strict_mode_refuses_what_no_page_documents(
    start_emulator: Callable[[EmulatorConfig], RunningEmulator],
) -> None:
    strict = start_emulator(BASE_CONFIG.with_changes(strict=True))
    metrica = Metrica(strict.base_url)
    try:
        refused = _post(metrica, 101, CALLS, type="CALLS")
        assert refused.status_code == 400 and error_of(refused)[1] == "invalid_parameter"
        assert "CALLS" in error_of(refused)[2]
        unconfirmed = _post(metrica, 101, CHATS_ANSWERED, type="CHATS")
        assert unconfirmed.status_code == 400 and error_of(unconfirmed)[1] == "invalid_uploading"
        assert "'Answered'" in error_of(unconfirmed)[2]
        calls_id = _post(metrica, 101, CALLS, "upload_calls").json()["uploading"]["id"]
        (chat,) = _post(metrica, 101, CHATS, type="CHATS").json()["uploadings"]
        conversion_id = _post(metrica, 101, CONVERSIONS, type="BASIC").json()["uploading"]["id"]
        # The shared list: conversions and chats (findAll_chats), never calls; calls on their own paths.
        listed = _get(metrica, 101, "uploadings").json()["uploadings"]
        assert [(u["id"], u["type"]) for u in listed] == [(conversion_id, "BASIC"), (chat["id"], "CHATS")]
        assert _get(metrica, 101, f"uploadings/{calls_id}").status_code == 404
        assert _get(metrica, 101, f"uploading/{chat['id']}").status_code == 404  # findById_1: conversions
        assert _get(metrica, 101, f"calls_uploading/{calls_id}").status_code == 200
        assert strict.admin.rules()["strict"] is True
    finally:
        metrica.close()


def test_lenient_mode_takes_the_undocumented_unified_calls(emu: RunningEmulator, metrica: Metrica) -> None:
    assert emu.admin.rules()["strict"] is False
    calls = _post(metrica, 101, CALLS, type="CALLS").json()["uploading"]
    assert calls["type"] == "CALLS"
    assert [u["id"] for u in _get(metrica, 101, "uploadings").json()["uploadings"]] == [calls["id"]]
    assert _post(metrica, 101, CHATS_ANSWERED, type="CHATS").status_code == 200  # Answered, Tag: our choice
    emu.admin.rules(strict=True)  # switched at run time too
    assert _post(metrica, 101, CALLS, type="CALLS").status_code == 400


@pytest.mark.parametrize(
    ("shape", "expect"),
    [
        ("uploadings", lambda body: set(body) == {"uploadings"} and len(body["uploadings"]) == 1),
        ("uploading", lambda body: set(body) == {"uploading"}),
        ("untyped", lambda body: "type" not in body["uploading"]),
        ("unreadable", lambda body: "uploading" not in body and "uploadings" not in body),
    ],
)
def test_a_scripted_shape_stores_the_upload_and_answers_in_that_shape(
    emu: RunningEmulator, metrica: Metrica, shape: str, expect: Callable[[dict[str, object]], bool]
) -> None:
    emu.admin.script([{"shape": shape}], kind="upload")
    answer = _post(metrica, 101, CONVERSIONS)
    assert answer.status_code == 200 and expect(answer.json())
    assert len(emu.admin.uploads(counter=101, with_rows=False)) == 1  # the upload was stored all the same


def test_a_not_json_answer_after_storing(emu: RunningEmulator, metrica: Metrica) -> None:
    emu.admin.script([{"shape": "not_json"}], kind="upload")
    answer = _post(metrica, 101, CONVERSIONS)
    assert answer.status_code == 200 and answer.text == "OK"
    assert len(emu.admin.uploads(counter=101, with_rows=False)) == 1
    with pytest.raises(httpx.HTTPStatusError):
        emu.admin.script([{"shape": "uploadings", "status": 503}], kind="upload")  # a shape only on "pass"
