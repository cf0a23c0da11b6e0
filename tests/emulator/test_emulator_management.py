"""Management API: counters list, counter offline_options, extended thresholds, goals, chats uploads."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from emulator.config import Account, CounterInfo, EmulatorConfig
from emulator.server import RunningEmulator
from tests.emulator.support import PAST, PREFIX, TOKENS, Metrica, calls_csv, error_of

pytest_plugins = ["tests.emulator.fixtures"]

MGMT = "/management/v1"
CHATS_CSV = f"DateTime,ChatPlatform,ChatUsername,ClientID,Answered\n{PAST},telegram,@ann,11,1\n{PAST},icq,@bob,12,0\n"


def test_counters_list_pages_with_one_based_offset(metrica: Metrica) -> None:
    listed = metrica.http.get(f"{MGMT}/counters", headers=metrica.headers()).json()
    assert listed["rows"] == 2 and [c["id"] for c in listed["counters"]] == [101, 102]
    first = listed["counters"][0]
    assert {"id", "name", "site", "status", "owner_login", "permission"} <= set(first)
    assert first["owner_login"] == "alice" and first["permission"] == "own"
    page = metrica.http.get(f"{MGMT}/counters", params={"per_page": 1, "offset": 2}, headers=metrica.headers())
    assert page.json() == {"rows": 2, "counters": [listed["counters"][1]]}
    carol = metrica.http.get(f"{MGMT}/counters", headers=metrica.headers(TOKENS["carol"])).json()
    assert [(c["id"], c["permission"]) for c in carol["counters"]] == [(101, "edit")]
    assert metrica.http.get(f"{MGMT}/counters").status_code == 401


def test_counters_metadata_from_config(start_emulator: Callable[[EmulatorConfig], RunningEmulator]) -> None:
    config = EmulatorConfig(
        accounts=(Account("t", "shop", frozenset({7, 8})),),
        counters=(CounterInfo(7, "Shop", "shop.example"),),
        clock_frozen=True,
    )
    running = start_emulator(config)
    body = httpx.get(running.base_url + f"{MGMT}/counters", headers={"Authorization": "OAuth t"}).json()
    assert [(c["id"], c["name"], c["site"]) for c in body["counters"]] == [
        (7, "Shop", "shop.example"), (8, "Counter 8", "site8.example"),
    ]  # fmt: skip
    found = httpx.get(
        running.base_url + f"{MGMT}/counters", params={"search_string": "shop"}, headers={"Authorization": "OAuth t"}
    ).json()
    assert found["rows"] == 1


def test_offline_options_switch_and_join_threshold(metrica: Metrica, emu: RunningEmulator) -> None:
    headers = metrica.headers()
    counter = metrica.http.get(f"{MGMT}/counter/101", headers=headers).json()["counter"]
    assert counter["offline_options"] == {
        "offline_conversion_extended_threshold": 0, "offline_calls_extended_threshold": 0,
        "offline_visits_extended_threshold": 0,
    }  # fmt: skip
    base = PREFIX.format(counter=101)
    assert metrica.http.get(f"{base}/calls_visit_join_threshold", headers=headers).json() == {
        "date": "2029-12-31T20:00:00Z"  # 16 hours before the emulator's 2030-01-01T12:00:00Z
    }
    assert metrica.http.post(f"{base}/calls_extended_threshold", headers=headers).json() == {"success": True}
    emu.admin.advance_clock(5 * 86400)
    # Visits since the option went on can be joined: the window has grown to five days.
    assert metrica.http.get(f"{base}/calls_visit_join_threshold", headers=headers).json()["date"] == (
        "2030-01-01T12:00:00Z"
    )
    emu.admin.advance_clock(30 * 86400)
    assert metrica.http.get(f"{base}/calls_visit_join_threshold", headers=headers).json()["date"] == (
        "2030-01-15T12:00:00Z"  # at most 21 days back
    )
    assert metrica.http.delete(f"{base}/calls_extended_threshold", headers=headers).json() == {"success": True}
    put = metrica.http.put(
        f"{MGMT}/counter/101",
        json={"counter": {"offline_options": {"offline_conversion_extended_threshold": 1}}},
        headers=headers,
    )
    assert put.json()["counter"]["offline_options"]["offline_conversion_extended_threshold"] == 1
    assert emu.admin.counter(101)["offline_options"]["offline_calls_extended_threshold"] == 0
    assert metrica.http.post(f"{base}/extended_threshold", headers=metrica.headers(TOKENS["bob"])).status_code == 403
    bad = metrica.http.put(f"{MGMT}/counter/101", json={"counter": {"offline_options": {"x": 1}}}, headers=headers)
    assert error_of(bad)[:2] == (400, "invalid_parameter")


def test_goals_are_stored_per_counter(metrica: Metrica, emu: RunningEmulator) -> None:
    headers = metrica.headers()
    goal = {"name": "Order confirmed", "type": "action", "conditions": [{"type": "exact", "url": "order_ok"}]}
    created = metrica.http.post(f"{MGMT}/counter/101/goals", json={"goal": goal}, headers=headers).json()["goal"]
    assert created["id"] > 0 and created["conditions"] == goal["conditions"] and created["type"] == "action"
    assert metrica.http.get(f"{MGMT}/counter/101/goals", headers=headers).json() == {"goals": [created]}
    assert metrica.http.get(f"{MGMT}/counter/102/goals", headers=headers).json() == {"goals": []}
    no_condition = metrica.http.post(
        f"{MGMT}/counter/101/goals", json={"goal": {"name": "x", "type": "action"}}, headers=headers
    )
    assert error_of(no_condition)[:2] == (400, "invalid_parameter")
    emu.admin.set_counter(102, goals=[goal])
    assert [g["name"] for g in emu.admin.counter(102)["goals"]] == ["Order confirmed"]


def test_chats_upload_status_and_list(metrica: Metrica, emu: RunningEmulator) -> None:
    base = PREFIX.format(counter=101)
    response = metrica.http.post(
        f"{base}/upload",
        params={"type": "CHATS", "comment": "chats1"},
        files={"file": ("chats.csv", CHATS_CSV.encode(), "text/csv")},
        headers=metrica.headers(),
    )
    assert response.status_code == 200, response.text
    # upload_chats and findById_chats answer a list of one upload object (with its type).
    (uploading,) = response.json()["uploadings"]
    assert uploading["type"] == "CHATS" and uploading["client_id_type"] == "CLIENT_ID"
    assert (uploading["source_quantity"], uploading["line_quantity"]) == (2, 1)  # icq is no chat platform
    assert metrica.http.get(f"{base}/uploadings/{uploading['id']}", headers=metrica.headers()).json() == {
        "uploadings": [uploading]
    }
    conversion = metrica.upload(101, calls_csv(f"1,g,{PAST}", header="ClientId,Target,DateTime"), kind="conversions")
    listed = metrica.list(101, kind="conversions").json()["uploadings"]
    assert [u["id"] for u in listed] == [conversion.json()["uploading"]["id"], uploading["id"]]
    assert listed[0]["type"] == "BASIC"  # the reference's type of an offline conversion
    assert emu.admin.uploads(kind="chats")[0]["rows"] == [
        {"DateTime": str(PAST), "ChatPlatform": "telegram", "ChatUsername": "@ann", "ClientID": "11", "Answered": "1"}
    ]
    assert any(g["type"] == "chat" for g in emu.admin.counter(101)["goals"])  # the automatic "Chat" goal


def test_chats_validation(metrica: Metrica) -> None:
    base = PREFIX.format(counter=101)

    def upload(text: str, **params: str) -> httpx.Response:
        return metrica.http.post(
            f"{base}/upload",
            params={"type": "CHATS", **params},
            files={"file": ("c.csv", text.encode(), "text/csv")},
            headers=metrica.headers(),
        )

    no_partner = upload(f"DateTime,ChatPlatform,ClientID\n{PAST},viber,1\n")
    assert error_of(no_partner)[1] == "invalid_uploading" and "chat-partner" in error_of(no_partner)[2]
    unattributed = upload(f"DateTime,ChatPlatform,PhoneNumber\n{PAST},whatsapp,+70000000001\n{PAST},viber,\n")
    (body,) = unattributed.json()["uploadings"]
    assert (body["line_quantity"], body["client_id_type"]) == (1, None)  # the empty partner row is dropped
    assert error_of(upload(f"DateTime,ChatPlatform,ChatUserID\n{PAST},viber,1\n", comment="a-b"))[1] == (
        "invalid_parameter"
    )
    assert error_of(upload(f"DateTime,ChatPlatform,ChatUserID\n{PAST},viber,1\n", type="SMS"))[1] == (
        "invalid_parameter"
    )
    # type=CALLS is the unified transport of calls: a chats file is not a calls file.
    assert error_of(upload(f"DateTime,ChatPlatform,ChatUserID\n{PAST},viber,1\n", type="CALLS"))[1] == (
        "invalid_uploading"
    )


def test_management_faults_only_when_named(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.set_faults(backend_error_share=1.0)
    assert metrica.http.get(f"{MGMT}/counters", headers=metrica.headers()).status_code == 200
    emu.admin.script([503], kind="management")
    assert metrica.http.get(f"{MGMT}/counter/101/goals", headers=metrica.headers()).status_code == 503


def test_new_config_keys() -> None:
    from emulator.config import OAuthApp, config_from_dict

    config = config_from_dict(
        {
            "oauth_apps": [{"client_id": "app", "client_secret": "s", "redirect_uris": "https://cb.example/x"}],
            "counters": [{"id": 5, "name": "Five"}],
            "token_lifetime": 60,
            "code_lifetime": 5,
            "join_rules": True,
            "count_unjoined": True,
        }
    )
    assert config.oauth_apps == (OAuthApp("app", "s", ("https://cb.example/x",)),)
    assert config.counters == (CounterInfo(5, "Five", None),)
    assert (config.token_lifetime, config.code_lifetime, config.join_rules, config.count_unjoined) == (
        60.0, 5.0, True, True,
    )  # fmt: skip
