"""Quieter, uniform logs (issue 25 item 6) and no internal key names in answers (item 9).

* the ingestion service (a real ``python -m ingest``): every stderr line is JSON, uvicorn's included,
  and each request is one ``http_request`` line with method, path (never the query string), status,
  duration and client;
* the beat's "Sending due task" line is at debug for frequent entries, at info for rare ones;
* an injected emulator fault is logged as ``fault_injected`` with ``injected=True``;
* the status API's token block names the Yandex login, never its quota key ``login.<login>``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from structlog.testing import capture_logs

from config.logging import BEAT_LOGGERS, DueTaskFilter, configure_logging, quiet_due_tasks
from config.settings import Settings
from emulator.faults import FaultInjector, FaultRule, script_from_dict
from tests.edge_helpers import env_of, ingest_process
from tests.helpers import wait_for
from worker.accounts.model import AccountIn, parse
from worker.app import celery_config
from worker.dataplane.ids import fingerprint
from worker.ops.counter_view import token_state
from worker.runtime import Runtime


def json_lines(raw: list[bytes]) -> list[dict[str, object]]:
    text = b"".join(raw).decode()
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def test_ingest_access_and_error_logs_are_json(make_settings: Callable[..., Settings]) -> None:
    env = env_of(make_settings(), CALLTRACK_METRICA_EMULATOR="true")
    with ingest_process(env) as svc:
        assert httpx.get(f"{svc.base_url}/healthz?code=query-secret-123").status_code == 200
        refused = httpx.post(f"{svc.base_url}/v1/calls?sig=query-secret-456", content=b"{not json")
        assert refused.status_code >= 400

        def seen() -> bool:
            return sum(b"query-secret" in line or b"/v1/calls" in line for line in svc.logs) >= 1

        wait_for(seen, timeout=10, what="the access line of POST /v1/calls")
    lines = json_lines(svc.logs)  # every line parses: uvicorn's start-up lines included
    assert any(str(line.get("logger", "")).startswith("uvicorn") for line in lines), lines[:5]
    access = [line for line in lines if line.get("event") == "http_request"]
    post = next(line for line in access if line["path"] == "/v1/calls")
    assert post["method"] == "POST" and post["status"] == refused.status_code
    assert isinstance(post["duration_ms"], float | int) and post["duration_ms"] >= 0
    assert str(post["client"]).startswith("127.0.0.1:") and post["level"] == "info"
    health = [line for line in access if line["path"] == "/healthz"]
    assert health and all(line["status"] == 200 for line in health)
    assert b"query-secret" not in b"".join(svc.logs)


@pytest.fixture
def stderr_logs(make_settings: Callable[..., Settings]) -> Iterator[tuple[io.StringIO, Settings]]:
    settings = make_settings(log_level="INFO")
    stream = io.StringIO()
    configure_logging(settings, force_format="json")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    yield stream, settings
    for name in BEAT_LOGGERS:
        for found in [f for f in logging.getLogger(name).filters if isinstance(f, DueTaskFilter)]:
            logging.getLogger(name).removeFilter(found)


def test_beat_logs_frequent_due_tasks_at_debug(stderr_logs: tuple[io.StringIO, Settings]) -> None:
    stream, settings = stderr_logs
    frequent = quiet_due_tasks(celery_config(settings)["beat_schedule"])
    assert "drain" in frequent and "reconcile" in frequent and "token_upkeep" not in frequent
    for logger in BEAT_LOGGERS:  # celery's scheduler and redbeat's write the same line
        for name in ("drain", "token_upkeep"):
            logging.getLogger(logger).info("Scheduler: Sending due task %s (%s)", name, f"calltrack.{name}")
    lines = json_lines([stream.getvalue().encode()])
    assert [line["event"] for line in lines] == [
        "Scheduler: Sending due task token_upkeep (calltrack.token_upkeep)"
    ] * 2
    stream.truncate(0)
    stream.seek(0)
    logging.getLogger().setLevel(logging.DEBUG)  # a debug run still shows every sending, at debug
    logging.getLogger("celery.beat").info("Scheduler: Sending due task %s (%s)", "drain", "calltrack.drain")
    (line,) = json_lines([stream.getvalue().encode()])
    assert line["level"] == "debug" and "drain" in str(line["event"])


def test_injected_faults_are_logged_as_injected() -> None:
    faults = FaultInjector(seed=1)
    faults.configure([FaultRule(backend_error_share=1.0, forget_share=1.0)], [])
    with capture_logs() as logs:
        decision = faults.decide("upload", 101)
        assert faults.forgets("upload", 101)
    assert decision.action == "error" and decision.status == 503
    assert [(e["event"], e["injected"], e["action"]) for e in logs] == [
        ("fault_injected", True, "error"),
        ("fault_injected", True, "forget"),
    ]
    assert logs[0]["status"] == 503 and logs[0]["source"] == "rule" and logs[0]["counter"] == 101
    scripted = FaultInjector()
    scripted.configure([], [script_from_dict({"answers": [{"status": 429}], "kind": "upload"})])
    with capture_logs() as logs:
        scripted.decide("upload", 7)
        scripted.decide("upload", 7)  # the script is used up: a plain pass, not logged
    assert [(e["event"], e["source"], e["status"]) for e in logs] == [("fault_injected", "script", 429)]


def test_status_answers_name_the_login_not_its_quota_key(make_settings: Callable[..., Settings]) -> None:
    env_tokens = {202: "y0_env-token-with-a-learned-login", 303: "y0_env-token-no-login-known"}
    rt = Runtime(
        make_settings(
            secret_keys=Fernet.generate_key().decode(), accounts_cache_seconds=0, metrica_counter_tokens=env_tokens
        )
    )
    try:
        rt.accounts._learn_login = lambda token: "Acme-Shop"  # Yandex ID's answer
        tokens = [{"name": "main", "token": "y0_tokenvalue-abcdef-123456"}]
        rt.accounts.put(parse(AccountIn, {"id": "acme", "tokens": tokens, "counters": [{"id": 101}]}))
        token = rt.accounts.token_for(101)
        assert token is not None and rt.accounts.login_of(token).startswith("login.")  # the quota key
        state = token_state(rt, 101)
        assert state["login"] == "acme-shop" and state["account"] == "acme"
        assert "login." not in orjson.dumps(state).decode()
        # An environment token's login, as envimport.py records it when Yandex ID names it.
        rt.redis.hset(rt.keys.token_logins, fingerprint(SecretStr(env_tokens[202])), "env-login")
        assert token_state(rt, 202)["login"] == "env-login"
        assert token_state(rt, 303)["login"] is None  # unknown: nothing, not the fingerprint
    finally:
        rt.close()
