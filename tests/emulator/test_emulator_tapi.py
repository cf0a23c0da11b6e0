"""An independent client, tapi-yandex-metrika, uploads calls to the emulator and reads the status back."""

from __future__ import annotations

from typing import Any

import pytest
from tapi_yandex_metrika import YandexMetrikaManagement
from tapi_yandex_metrika.exceptions import YandexMetrikaClientError
from tapi_yandex_metrika.tapi_yandex_metrika import YandexMetrikaManagementClientAdapter

from emulator.server import RunningEmulator
from tests.emulator.support import PAST, TOKENS, calls_csv

pytest_plugins = ["tests.emulator.fixtures"]


@pytest.fixture
def tapi_client(emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> Any:
    # The library hard-codes https://api-metrika.yandex.net/ in its adapter; point it at the emulator.
    monkeypatch.setattr(
        YandexMetrikaManagementClientAdapter,
        "get_api_root",
        lambda self, api_params, resource_name: emu.base_url + "/",
    )
    return YandexMetrikaManagement(access_token=TOKENS["alice"], default_url_params={"counterId": 101})


def test_tapi_uploads_calls_and_reads_the_status(tapi_client: Any, emu: RunningEmulator) -> None:
    content = calls_csv(f"1001,{PAST},1", f"1002,{PAST},0", header="ClientId,DateTime,StaticCall")
    # Sent as the library sends it: files=..., the legacy client_id_type, Content-Type: application/json.
    result = tapi_client.offline_conversions_upload_calls().post(
        params={"client_id_type": "CLIENT_ID", "comment": "via tapi"},
        files={"file": ("calls.csv", content.encode())},
    )
    uploading = result.data["uploading"]
    assert uploading["line_quantity"] == 2
    assert uploading["static_calls_quantity"] == 1
    assert uploading["client_id_type"] == "CLIENT_ID"

    status = tapi_client.offline_conversions_calls_uploading(id=uploading["id"]).get()
    assert status.data["uploading"]["status"] == "UPLOADED"
    emu.admin.advance_clock(3600)
    listed = tapi_client.offline_conversions_calls_uploadings().get(params={"limit": 10, "offset": 0})
    assert [(u["id"], u["status"]) for u in listed.data["uploadings"]] == [(uploading["id"], "PROCESSED")]
    assert [row["comment"] for row in emu.admin.rows()] == ["via tapi", "via tapi"]


def test_tapi_sees_metrica_errors(tapi_client: Any) -> None:
    content = calls_csv(f"1001,{PAST}")
    with pytest.raises(YandexMetrikaClientError) as caught:
        tapi_client.offline_conversions_upload_calls().post(
            params={"client_id_type": "USER_ID"}, files={"file": ("calls.csv", content.encode())}
        )
    assert "invalid_uploading" in str(caught.value)
