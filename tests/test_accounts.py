"""The account registry against the real Redis: storage, encryption, validation, sync, cache, rotation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from redis import Redis

from config.settings import Settings
from worker.accounts import edits
from worker.accounts.envimport import import_env
from worker.accounts.model import AccountIn, parse
from worker.accounts.registry import Registry
from worker.dataplane.ids import fingerprint
from worker.errors import AccountInputError, CounterRemovedError, DeferredError, SecretKeyError
from worker.runtime import Runtime

KEY = Fernet.generate_key().decode()
SECRET = "y0_tokenvalue-abcdef-123456"


def registry(make_settings: Callable[..., Settings], **overrides: Any) -> Registry:
    settings = make_settings(secret_keys=overrides.pop("secret_keys", KEY), accounts_cache_seconds=0, **overrides)
    return Runtime(settings).accounts


def spec(account: str = "acme", counters: tuple[int, ...] = (101,), token: str | None = SECRET) -> AccountIn:
    tokens = [{"name": "main", **({"token": token} if token else {})}]
    return parse(AccountIn, {"id": account, "tokens": tokens, "counters": [{"id": c} for c in counters]})


def dump(redis: Redis, namespace: str) -> str:
    parts = []
    for key in redis.scan_iter(match=f"{namespace}:*"):
        parts.append(key)
        kind = redis.type(key)
        if kind == "hash":
            parts.append(repr(redis.hgetall(key)))
        elif kind == "string":
            parts.append(str(redis.get(key)))
    return "\n".join(parts)


def test_an_account_is_stored_encrypted_and_read_back(
    make_settings: Callable[..., Settings], redis: Redis, namespace: str
) -> None:
    reg = registry(make_settings)
    change = reg.put(spec())
    assert change.outcomes == {"acme": "created"}
    assert reg.token_for(101) == SecretStr(SECRET)
    account = reg.get("acme")
    assert account is not None and account.tokens[0].value.get_secret_value() == SECRET
    assert SECRET not in dump(redis, namespace)
    assert SECRET not in repr(account.public()) and SECRET not in repr(account)


def test_bad_input_names_the_field_and_rule_and_stores_nothing(
    make_settings: Callable[..., Settings], redis: Redis, namespace: str
) -> None:
    reg = registry(make_settings)
    bad = [
        ({"id": "Acme!"}, "id"),
        ({"id": "acme", "counters": [{"id": 0}]}, "counters.0.id"),
        ({"id": "acme", "counters": [{"id": 5, "timezone": "Mars/Base"}]}, "counters.0.timezone"),
        ({"id": "acme", "tokens": [{"name": "main"}]}, "tokens.0.token"),
        (
            {"id": "acme", "telephony": [{"provider": "sipuni", "account": "x", "secret": "s3cr3t"}]},
            "telephony.0.provider",
        ),
    ]
    for data, field in bad:
        assert isinstance(data, dict)
        with pytest.raises(AccountInputError) as caught:
            edits.create(reg, data)
        assert caught.value.field == field, caught.value
        assert "s3cr3t" not in str(caught.value)
    assert list(redis.scan_iter(match=f"{namespace}:*")) == []


def test_a_counter_belongs_to_one_account(make_settings: Callable[..., Settings]) -> None:
    reg = registry(make_settings)
    reg.put(spec("acme", (101, 102)))
    with pytest.raises(AccountInputError, match="counter 102 belongs to account 'acme'"):
        reg.put(spec("beta", (102, 103), token="other-token-1"))
    assert reg.get("beta") is None


def test_sync_is_idempotent_and_removes_what_is_absent(make_settings: Callable[..., Settings], redis: Redis) -> None:
    reg = registry(make_settings)
    reg.put(spec("gone", (900,), token="gone-token-1"))
    accounts = [spec("acme", (101, 102)), spec("beta", (201,), token="beta-token-1")]
    first = reg.sync(accounts)
    assert first.summary() == {"created": 2, "updated": 0, "unchanged": 0, "removed": 1}
    version = redis.get(reg.keys.accounts_version)
    second = reg.sync(accounts)
    assert second.summary() == {"created": 0, "updated": 0, "unchanged": 2, "removed": 0}
    assert redis.get(reg.keys.accounts_version) == version
    # A token left out keeps its stored value: the same set without secrets changes nothing either.
    assert reg.sync([spec("acme", (101, 102), token=None), spec("beta", (201,), token=None)]).count("unchanged") == 2
    with pytest.raises(CounterRemovedError):
        reg.token_for(900)


def test_removed_counter_waits_and_readding_resumes(make_settings: Callable[..., Settings]) -> None:
    reg = registry(make_settings)
    reg.put(spec("acme", (101, 102)))
    edits.remove_counter(reg, 102)
    with pytest.raises(CounterRemovedError):
        reg.token_for(102)
    assert reg.token_for(102, removed_ok=True) is None
    edits.add_counter(reg, "acme", {"id": 102, "goal_name": "calls"})
    assert reg.token_for(102) == SecretStr(SECRET)
    assert reg.goal_name(102) == "calls"


def test_a_counter_of_an_account_without_a_token_waits(make_settings: Callable[..., Settings]) -> None:
    reg = registry(make_settings)
    edits.create(reg, {"id": "later", "counters": [{"id": 301}]})
    with pytest.raises(DeferredError, match="has no token"):
        reg.token_for(301)
    assert reg.token_for(301, removed_ok=True) is None


def test_workers_see_changes_after_the_cache_time(make_settings: Callable[..., Settings]) -> None:
    writer = registry(make_settings)
    reader = Runtime(make_settings(secret_keys=KEY, accounts_cache_seconds=30)).accounts
    assert reader.counter(101) is None
    writer.put(spec())
    assert reader.counter(101) is None  # cached for 30 s
    reader._checked = 0.0  # the cache time has passed
    assert reader.token_for(101) == SecretStr(SECRET)


def test_rotation_of_the_key_ring(make_settings: Callable[..., Settings]) -> None:
    old, new = KEY, Fernet.generate_key().decode()
    registry(make_settings, secret_keys=old).put(spec())
    both = registry(make_settings, secret_keys=f"{new},{old}")
    assert both.rekey() == 1
    only_new = registry(make_settings, secret_keys=new)
    assert only_new.token_for(101) == SecretStr(SECRET)
    with pytest.raises(SecretKeyError):
        registry(make_settings, secret_keys=old).get("acme")


def test_quota_login_is_the_learned_login_else_the_fingerprint(make_settings: Callable[..., Settings]) -> None:
    reg = registry(make_settings)
    reg._learn_login = lambda token: "Acme-Shop" if token.get_secret_value() == SECRET else None
    reg.put(spec("acme", (101,)))
    reg.put(spec("beta", (201,), token="unknown-login-token"))
    assert reg.login_of(SecretStr(SECRET)) == "login.acme-shop"
    assert reg.login_of(SecretStr("unknown-login-token")) == fingerprint(SecretStr("unknown-login-token"))


def test_environment_variables_are_imported_once(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        secret_keys=KEY,
        metrica_counter_tokens={101: "env-token-one", 102: "env-token-one", 103: "env-token-two"},
        zadarma_secrets={"shop": "zadarma-secret-1"},
        zadarma_timezone="Asia/Yekaterinburg",
    )
    reg = Runtime(settings).accounts
    reg._learn_login = lambda token: None
    assert import_env(reg, settings).outcomes == {"env": "created"}  # type: ignore[union-attr]
    assert import_env(reg, settings).outcomes == {"env": "unchanged"}  # type: ignore[union-attr]
    env = reg.get("env")
    assert env is not None and len(env.tokens) == 2 and len(env.counters) == 3
    assert env.telephony[0].timezone == "Asia/Yekaterinburg"
    assert reg.token_for(103) == SecretStr("env-token-two")


def test_a_bad_key_ring_is_refused_naming_the_variable_not_the_value() -> None:
    from config.settings import describe_error

    with pytest.raises(Exception) as caught:
        Settings(_env_file=None, secret_keys="not-a-fernet-key-but-secret")
    text = describe_error(caught.value)  # type: ignore[arg-type]
    assert "CALLTRACK_SECRET_KEYS" in text and "Fernet key" in text
    assert "not-a-fernet-key-but-secret" not in text


def test_the_doctor_names_a_key_ring_that_cannot_open_the_registry(make_settings: Callable[..., Settings]) -> None:
    from click.testing import CliRunner

    from ctl.__main__ import main
    from ctl.context import Context

    registry(make_settings).put(spec())
    other = make_settings(secret_keys=Fernet.generate_key().decode())
    result = CliRunner().invoke(main, ["doctor"], obj=Context(other))
    assert "opens with no key of CALLTRACK_SECRET_KEYS" in result.output
    assert SECRET not in result.output


def test_a_counters_phone_region_from_the_registry_reads_its_national_numbers(
    make_settings: Callable[..., Settings],
) -> None:
    from tests.helpers import make_call
    from tests.ingest_helpers import stored_rows

    rt = Runtime(make_settings(secret_keys=KEY, accounts_cache_seconds=0, phone_region="RU"))
    accounts = {"id": "by", "tokens": [{"token": SECRET}], "counters": [{"id": 404, "phone_region": "BY"}]}
    rt.accounts.put(parse(AccountIn, accounts))
    result = rt.producer.submit(
        [make_call(404, 1, PhoneNumber="8 029 123-45-67"), make_call(101, 2, PhoneNumber="8 (912) 345-67-89")]
    )
    assert len(result.accepted) == 2
    assert sorted(row["PhoneNumber"] for row in stored_rows(rt)) == ["+375291234567", "+79123456789"]
    rt.close()
