"""Yandex ID stand-in: consent page, code exchange, refresh, user info, expiry and admin token knobs."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from emulator.config import DEFAULT_OAUTH_APP
from emulator.server import RunningEmulator
from tests.emulator.support import PAST, Metrica, calls_csv

pytest_plugins = ["tests.emulator.fixtures"]

CLIENT = DEFAULT_OAUTH_APP.client_id
SECRET = DEFAULT_OAUTH_APP.client_secret
CALLBACK = "http://127.0.0.1:8000/oauth/callback"


def consent(http: httpx.Client, login: str = "alice", decision: str = "allow", state: str = "s1") -> dict[str, str]:
    """Submit the consent form; the query of the redirect target."""
    form = {"client_id": CLIENT, "redirect_uri": CALLBACK, "state": state, "login": login, "decision": decision}
    response = http.post("/authorize", data=form)
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(CALLBACK + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def exchange(http: httpx.Client, code: str, **extra: str) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "client_id": CLIENT, "client_secret": SECRET}
    data.update(extra)
    return http.post("/token", data=data)


@pytest.fixture
def http(emu: RunningEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.base_url, timeout=30) as client:
        yield client


def test_consent_page_is_a_plain_form(http: httpx.Client) -> None:
    page = http.get(
        "/authorize",
        params={"response_type": "code", "client_id": CLIENT, "redirect_uri": CALLBACK, "state": "abc"},
    )
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    for marker in ("id='login'", "id='allow'", "id='deny'", "method='post'", "value='abc'"):
        assert marker in text
    for login in ("alice", "bob", "carol"):
        assert f"<option value='{login}'>" in text


def test_unknown_client_or_foreign_redirect_is_an_error_page(http: httpx.Client) -> None:
    bad_client = http.get("/authorize", params={"response_type": "code", "client_id": "nope", "redirect_uri": CALLBACK})
    assert bad_client.status_code == 400 and "Unknown client_id" in bad_client.text
    foreign = http.get(
        "/authorize", params={"response_type": "code", "client_id": CLIENT, "redirect_uri": "https://evil.example/cb"}
    )
    assert foreign.status_code == 400
    token_flow = http.get(
        "/authorize", params={"response_type": "token", "client_id": CLIENT, "redirect_uri": CALLBACK, "state": "q"}
    )
    assert token_flow.status_code == 302
    assert "error=unsupported_response_type" in token_flow.headers["location"]


def test_code_flow_gives_a_metrica_token_of_the_login(http: httpx.Client, emu: RunningEmulator) -> None:
    answer = consent(http, "alice", state="xyz")
    assert answer["state"] == "xyz" and answer["code"]
    response = exchange(http, answer["code"])
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "refresh_token", "token_type"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 365 * 86400
    metrica = Metrica(emu.base_url, token=body["access_token"])
    try:
        assert metrica.upload(101, calls_csv(f"1,{PAST}")).status_code == 200
        assert metrica.list(201).status_code == 403  # bob's counter
    finally:
        metrica.close()
    info = http.get("/info", params={"format": "json"}, headers={"Authorization": f"OAuth {body['access_token']}"})
    assert info.status_code == 200
    assert info.json()["login"] == "alice" and info.json()["client_id"] == CLIENT and info.json()["id"].isdigit()
    assert emu.admin.uploads()[0]["login"] == "alice"


def test_codes_are_single_use_and_short_lived(http: httpx.Client, emu: RunningEmulator) -> None:
    code = consent(http)["code"]
    assert exchange(http, code).status_code == 200
    again = exchange(http, code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    late = consent(http)["code"]
    emu.admin.advance_clock(601)
    assert exchange(http, late).json()["error"] == "invalid_grant"


def test_client_errors_and_basic_auth(http: httpx.Client) -> None:
    code = consent(http)["code"]
    wrong = http.post("/token", data={"grant_type": "authorization_code", "code": code, "client_id": CLIENT})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_client"
    assert set(wrong.json()) == {"error", "error_description"}
    basic = base64.b64encode(f"{CLIENT}:{SECRET}".encode()).decode()
    ok = http.post(
        "/token", data={"grant_type": "authorization_code", "code": code}, headers={"Authorization": f"Basic {basic}"}
    )
    assert ok.status_code == 200
    odd = http.post("/token", data={"grant_type": "password", "client_id": CLIENT, "client_secret": SECRET})
    assert odd.json()["error"] == "unsupported_grant_type"


def test_deny_redirects_with_access_denied(http: httpx.Client) -> None:
    answer = consent(http, decision="deny", state="st")
    assert answer == {"error": "access_denied", "error_description": "the user denied access", "state": "st"}


def test_refresh_rotates_the_refresh_token(http: httpx.Client) -> None:
    first = exchange(http, consent(http)["code"]).json()
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    second = http.post("/token", data={**refresh, "client_id": CLIENT, "client_secret": SECRET})
    assert second.status_code == 200
    assert second.json()["access_token"] != first["access_token"]
    assert second.json()["refresh_token"] != first["refresh_token"]
    reused = http.post("/token", data={**refresh, "client_id": CLIENT, "client_secret": SECRET})
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"


def test_tokens_expire_on_the_emulator_clock(http: httpx.Client, emu: RunningEmulator) -> None:
    emu.admin.rules(token_lifetime=3600)
    body = exchange(http, consent(http, "bob")["code"]).json()
    assert body["expires_in"] == 3600
    metrica = Metrica(emu.base_url, token=body["access_token"])
    try:
        assert metrica.list(201).status_code == 200
        emu.admin.advance_clock(3600)
        expired = metrica.list(201)
        assert expired.status_code == 403 and expired.json()["errors"][0]["error_type"] == "invalid_token"
    finally:
        metrica.close()
    info = http.get("/info", headers={"Authorization": f"OAuth {body['access_token']}"})
    assert info.status_code == 401
    # The refresh token lived as long as the token.
    late = http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": CLIENT,
              "client_secret": SECRET},
    )  # fmt: skip
    assert late.json()["error"] == "invalid_grant"


def test_admin_issue_expire_and_revoke(emu: RunningEmulator) -> None:
    issued = emu.admin.issue_token("carol", lifetime=60, refresh=True)
    token = issued["access_token"]
    assert issued["expires_in"] == 60 and issued["record"]["login"] == "carol"
    metrica = Metrica(emu.base_url, token=token)
    try:
        assert metrica.list(101).status_code == 200
        assert metrica.list(102).status_code == 403  # carol reaches 101 only
        emu.admin.expire_token(token)
        assert metrica.list(101).status_code == 403
        assert [t["expired"] for t in emu.admin.tokens("carol") if t["token"] == token] == [True]
        forever = emu.admin.issue_token("carol", never_expires=True)
        emu.admin.advance_clock(10 * 365 * 86400.0)
        assert metrica.list(101, token=forever["access_token"]).status_code == 200
        emu.admin.revoke_token(forever["access_token"])
        assert metrica.list(101, token=forever["access_token"]).status_code == 403
    finally:
        metrica.close()
    # Configured tokens can be expired too; a reset brings them back and forgets issued ones.
    emu.admin.expire_token("token-alice")
    assert Metrica(emu.base_url).list(101).status_code == 403
    emu.admin.reset()
    assert Metrica(emu.base_url).list(101).status_code == 200
    assert {t["source"] for t in emu.admin.tokens()} == {"config"}
