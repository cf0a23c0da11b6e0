"""Tokens never leak (logs, task arguments, Redis, errors); log lines carry task, counter and batch ids."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import signals
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from config.settings import Settings
from emulator.config import Account
from tests.helpers import make_call, redis_contents, wait_for
from tests.pipeline import running_emulator, running_worker
from worker.dataplane.ids import is_batch_id
from worker.delivery.metrica import MetricaClient
from worker.errors import AuthError
from worker.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
TOKEN_A = "AQAAAAAsecretTokenOfClientA0123456789"
TOKEN_B = "AQAAAAAsecretTokenOfClientB9876543210"


def test_tokens_appear_nowhere_during_a_run(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    accounts = (Account(TOKEN_A, "client-a", frozenset({101})), Account(TOKEN_B, "client-b", frozenset({202})))
    published: list[tuple[str, Any, Any]] = []

    def on_publish(sender: str | None = None, body: Any = None, **_: Any) -> None:
        args, kwargs = (body[0], body[1]) if isinstance(body, tuple | list) else ([], {})
        published.append((str(sender), args, kwargs))

    signals.before_task_publish.connect(on_publish, weak=False)
    try:
        with running_emulator(step_seconds=0.1, accounts=accounts) as emulator:
            settings = make_settings(
                metrica_base_url=emulator.base_url, metrica_counter_tokens={101: TOKEN_A, 202: TOKEN_B}
            )
            # Capture after the worker has configured logging, which replaces structlog's processors.
            with running_worker(settings, tmp_path), capture_logs(processors=[merge_contextvars]) as events:
                Runtime(settings).producer.submit([make_call(c, i) for c in (101, 202) for i in range(20)])
                wait_for(lambda: emulator.admin.stats()["rows"] == 40, timeout=60, what="40 rows stored")
                # Everything Redis holds for this deployment, keys and values (each read by its type).
                stored = redis_contents(settings.redis_url, settings.namespace)
    finally:
        signals.before_task_publish.disconnect(on_publish)

    assert any(e["event"] == "batch_uploaded" for e in events)
    assert ":batch:" in stored and "'rows'" in stored, "the scan did not read the batch records"
    haystack = stored + "\n" + json.dumps(events, default=str)
    for token in (TOKEN_A, TOKEN_B):
        assert token not in haystack
    assert published, "no task was published"
    for name, args, kwargs in published:
        assert TOKEN_A not in repr((args, kwargs)) and TOKEN_B not in repr((args, kwargs))
        if name == "calltrack.upload_batch":
            assert len(args) == 1 and is_batch_id(args[0]) and not kwargs


def test_the_secrets_scan_reads_every_type_of_value(runtime: Runtime) -> None:
    """The scan above finds a secret in a value of every Redis type, however it is encoded (``DUMP``
    would give listpack and LZF-compressed bytes: a repeated secret is stored once)."""
    ns, r = runtime.settings.namespace, runtime.redis
    secret = TOKEN_A
    r.set(f"{ns}:t:string", f"g{secret}" * 20)
    r.hset(f"{ns}:t:hash", "k", f"a{secret}")
    r.rpush(f"{ns}:t:list", f"b{secret}")
    r.sadd(f"{ns}:t:set", f"c{secret}")
    r.zadd(f"{ns}:t:zset", {f"d{secret}": 1})
    r.xadd(f"{ns}:t:stream", {"v": f"e{secret}"})
    envelope = {"body": base64.b64encode(f'[["f{secret}"], {{}}, {{}}]'.encode()).decode(),
                "properties": {"body_encoding": "base64"}}  # fmt: skip
    r.rpush(f"{ns}:t:celery", json.dumps(envelope))
    stored = redis_contents(runtime.settings.redis_url, ns)
    for prefix in "abcdefg":
        assert f"{prefix}{secret}" in stored, f"the value marked {prefix} was not read"


def test_task_log_lines_carry_task_counter_and_batch_ids(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with running_emulator(step_seconds=0.1) as emulator:
        settings = make_settings(metrica_base_url=emulator.base_url)
        with running_worker(settings, tmp_path), capture_logs(processors=[merge_contextvars]) as events:
            Runtime(settings).producer.submit([make_call(303, i) for i in range(5)])
            wait_for(lambda: any(e["event"] == "batch_final" for e in events), timeout=60, what="a batch to be final")
    uploaded = [e for e in events if e["event"] == "batch_uploaded"]
    assert uploaded
    for event in uploaded:
        assert event["counter_id"] == 303
        assert is_batch_id(event["batch_id"])
        assert event["task_id"] and event["task"] == "calltrack.upload_batch"
    final = [e for e in events if e["event"] == "batch_final"]
    assert all(e["counter_id"] == 303 and is_batch_id(e["batch_id"]) and e["task_id"] for e in final)


def test_auth_error_text_and_pickle_hold_no_token(make_settings: Callable[..., Settings]) -> None:
    import pickle

    import httpx

    with running_emulator() as emulator:
        client = MetricaClient(emulator.base_url, timeout=httpx.Timeout(5.0))
        settings = make_settings(metrica_token=TOKEN_A)
        token = settings.token_for(101)
        assert token is not None
        from worker.model.kinds import CALLS

        try:
            client.uploadings(CALLS, 101, token)
        except AuthError as error:
            caught = error
        else:
            raise AssertionError("the emulator accepted an unknown token")
        client.close()
    assert caught.status == 403 and caught.error_type == "invalid_token"
    for text in (str(caught), repr(caught), repr(caught.__dict__), repr(pickle.loads(pickle.dumps(caught)).__dict__)):
        assert TOKEN_A not in text
    assert (caught.__cause__ is None and caught.__context__ is None) or TOKEN_A not in repr(caught.__context__)


def run_logging(fmt: str, env_extra: dict[str, str]) -> str:
    code = (
        "import structlog\n"
        "from config.settings import Settings\n"
        "from config.logging import configure_logging\n"
        f"configure_logging(Settings(_env_file=None), force_format={fmt!r})\n"
        "structlog.contextvars.bind_contextvars(counter_id=5, batch_id='CTabcS0B1')\n"
        f"structlog.get_logger('t').warning('oops', detail='token was {TOKEN_A}')\n"
        "import logging; logging.getLogger('celery').warning('celery says %s', 'hello')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CALLTRACK_METRICA_TOKEN": TOKEN_A, **env_extra}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return result.stderr


def test_json_lines_when_not_on_a_terminal_and_secrets_scrubbed() -> None:
    lines = [json.loads(line) for line in run_logging("json", {}).strip().splitlines()]
    assert lines[0]["event"] == "oops" and lines[0]["counter_id"] == 5 and lines[0]["batch_id"] == "CTabcS0B1"
    assert TOKEN_A not in lines[0]["detail"] and "redacted" in lines[0]["detail"]
    assert lines[1]["event"] == "celery says hello" and lines[1]["logger"] == "celery"


def test_console_format_is_readable() -> None:
    out = run_logging("console", {})
    assert "oops" in out and "counter_id=5" in out and TOKEN_A not in out
    assert not out.lstrip().startswith("{")
