"""Authentication and access errors, in Metrica's exact error body."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from emulator.config import EmulatorConfig
from emulator.server import RunningEmulator
from tests.emulator.support import PAST, TOKENS, Metrica, calls_csv, error_of

pytest_plugins = ["tests.emulator.fixtures"]

UPLOAD_PATH = "/management/v1/counter/101/offline_conversions/upload_calls"


@pytest.mark.parametrize("header", [None, "", "OAuth", "OAuth  x y", "Bearer token-alice", "token-alice"])
def test_missing_or_malformed_authorization_is_401(metrica: Metrica, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = metrica.http.get("/management/v1/counter/101/offline_conversions/calls_uploadings", headers=headers)
    assert response.status_code == 401
    assert error_of(response)[:2] == (401, "unauthorized")


def test_oauth_token_query_parameter_is_not_accepted(metrica: Metrica) -> None:
    response = metrica.http.get(
        "/management/v1/counter/101/offline_conversions/calls_uploadings", params={"oauth_token": TOKENS["alice"]}
    )
    assert response.status_code == 401


def test_unknown_token_is_403_invalid_token(metrica: Metrica) -> None:
    response = metrica.upload(101, calls_csv(f"1,{PAST}"), token="no-such-token")
    assert response.status_code == 403
    assert error_of(response)[:2] == (403, "invalid_token")


def test_counter_of_another_login_is_403_access_denied(metrica: Metrica, emu: RunningEmulator) -> None:
    response = metrica.upload(201, calls_csv(f"1,{PAST}"))
    assert response.status_code == 403
    assert error_of(response)[:2] == (403, "access_denied")
    assert metrica.list(201, token=TOKENS["bob"]).status_code == 200
    # Two logins sharing a counter both reach it.
    assert metrica.upload(101, calls_csv(f"1,{PAST}"), token=TOKENS["carol"]).status_code == 200
    assert metrica.list(101).json()["uploadings"][0]["id"] == emu.admin.uploads()[0]["id"]
    assert emu.admin.uploads()[0]["login"] == "carol"


def test_unknown_counter_and_unknown_upload_are_404(metrica: Metrica) -> None:
    unknown_counter = metrica.upload(999, calls_csv(f"1,{PAST}"))
    assert unknown_counter.status_code == 404
    assert error_of(unknown_counter)[:2] == (404, "not_found")
    assert metrica.status(101, 123456).status_code == 404
    assert error_of(metrica.status(101, 123456))[1] == "not_found"
    # An upload is found only under its own counter.
    upload_id = metrica.upload(101, calls_csv(f"1,{PAST}")).json()["uploading"]["id"]
    assert metrica.status(102, upload_id).status_code == 404
    assert metrica.status(101, upload_id).status_code == 200


def test_malformed_ids_and_unknown_paths(metrica: Metrica) -> None:
    assert error_of(metrica.http.get("/management/v1/counter/abc/offline_conversions/calls_uploadings",
                                     headers=metrica.headers()))[:2] == (400, "invalid_parameter")  # fmt: skip
    assert error_of(metrica.status(101, 0))[1] == "invalid_parameter"
    missing = metrica.http.get("/management/v1/counter/101/offline_conversions/nothing", headers=metrica.headers())
    assert error_of(missing)[:2] == (404, "not_found")
    wrong_method = metrica.http.get(UPLOAD_PATH, headers=metrica.headers())
    assert wrong_method.status_code == 405
    error_of(wrong_method)


def test_star_account_reaches_every_positive_counter(
    start_emulator: Callable[[EmulatorConfig], RunningEmulator],
) -> None:
    running = start_emulator(EmulatorConfig())  # defaults: demo-token of login demo, counters "*"
    client = Metrica(running.base_url, token="demo-token")
    try:
        assert client.upload(987654321, calls_csv(f"1,{PAST}")).status_code == 200
        assert client.list(5).json() == {"uploadings": []}
        assert client.upload(987654321, calls_csv(f"1,{PAST}"), token="other").status_code == 403
    finally:
        client.close()
