"""``ctl accounts`` / ``ctl counters`` against the real Redis: every command, --json, and refusals that
name the field and the rule, store nothing and print no secret."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from redis import Redis

from config.settings import Settings
from tests.accounts_helpers import SECRET_KEY, ctl

TOKEN = "AQAAAAAcliSecretToken000000000000042"
ZADARMA = "zadarma-secret-of-the-cli-test"


def settings_for(make_settings: Callable[..., Settings]) -> Settings:
    # No emulator: the login stays unknown (user info cannot be reached), quotas count by fingerprint.
    return make_settings(secret_keys=SECRET_KEY, emulator_url="http://127.0.0.1:9", accounts_cache_seconds=0)


def test_every_command_and_json(make_settings: Callable[..., Settings]) -> None:
    s = settings_for(make_settings)
    outputs = []

    def run(*args: str, stdin: str | None = None, expect: int = 0) -> str:
        code, out = ctl(s, *args, stdin=stdin)
        assert code == expect, out
        outputs.append(out)
        return out

    assert "acme created" in run(
        "accounts", "add", "acme", "--name", "ACME", "--counter", "101", "--token-stdin", stdin=TOKEN
    )
    run("counters", "add", "102", "--account", "acme", "--goal-name", "Calls", "--timezone", "Europe/Moscow")
    run("counters", "update", "102", "--flush-age", "30", "--phone-region", "RU")
    run("accounts", "telephony", "acme", "zadarma", "shop", "--secret-stdin", "--timezone", "Asia/Omsk", stdin=ZADARMA)
    run("accounts", "telephony", "acme", "zadarma", "shop", "--timezone", "Asia/Yekaterinburg")  # secret kept
    shown = orjson.loads(run("accounts", "show", "acme", "--json"))
    assert shown["name"] == "ACME" and [c["id"] for c in shown["counters"]] == [101, 102]
    assert shown["counters"][1] == {
        "id": 102, "goal_name": "Calls", "flush_age": 30.0, "phone_region": "RU", "timezone": "Europe/Moscow"
    }  # fmt: skip
    assert shown["telephony"] == [
        {"provider": "zadarma", "account": "shop", "timezone": "Asia/Yekaterinburg", "has_secret": True}
    ]
    counter = orjson.loads(run("counters", "show", "102", "--json"))
    assert counter["account"] == "acme"
    assert "102" in run("counters", "list", "--account", "acme")
    listed = orjson.loads(run("accounts", "list", "--json"))["accounts"]
    assert [a["id"] for a in listed] == ["acme"] and listed[0]["problems"] == []
    assert "acme updated" in run("accounts", "update", "acme", "--name", "Acme Ltd")
    run("counters", "remove", "101")
    assert orjson.loads(run("counters", "list", "--json"))["removed"] == [101]
    run("accounts", "telephony", "acme", "zadarma", "shop", "--remove")
    assert "acme removed" in run("accounts", "remove", "acme")
    assert orjson.loads(run("accounts", "list", "--json")) == {"accounts": []}
    assert all(TOKEN not in out and ZADARMA not in out for out in outputs)


def test_refusals_name_field_and_rule_and_store_nothing(
    make_settings: Callable[..., Settings], redis: Redis, namespace: str
) -> None:
    s = settings_for(make_settings)
    cases = [
        (("accounts", "add", "Bad Id"), None, "id: String should match pattern"),
        (
            ("accounts", "add", "acme", "--token-stdin"),
            f"{TOKEN} trailing",
            "tokens.0.token: must not contain white space",
        ),
        (("accounts", "add", "acme", "--counter", "0"), None, "counters.0.id: Input should be greater than 0"),
        (("counters", "add", "5", "--account", "nobody"), None, "account: no account 'nobody'"),
        (("accounts", "show", "nobody"), None, "account: no account 'nobody'"),
    ]
    for args, stdin, message in cases:
        code, out = ctl(s, *args, stdin=stdin)
        assert code == 1 and message in out, out
        assert TOKEN not in out
    assert list(redis.scan_iter(match=f"{namespace}:*")) == []
    ctl(s, "accounts", "add", "acme", "--counter", "7")
    code, out = ctl(s, "counters", "update", "7", "--timezone", "Mars/Olympus")
    assert code == 1 and "timezone: must be an IANA time zone name" in out
    code, out = ctl(s, "accounts", "add", "beta", "--counter", "7")
    assert code == 1 and "counter 7 belongs to account 'acme'" in out
