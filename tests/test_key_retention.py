"""Nothing kept forever by accident (issue 23, item 6): after a short full pipeline (calls and a
conversion drained, uploaded and reconciled, a webhook sent, a call held, a visitor's session leased
and its call attributed), every key of the namespace without a TTL must be on the allow-list kept in
code beside the key table (``worker/dataplane/forever.py``), each with its reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from config.settings import Settings
from emulator.config import Account
from emulator.server import RunningEmulator
from tests.accounts_helpers import ctl
from tests.helpers import make_call, wait_for
from tests.ingest_helpers import recent
from tests.pipeline import running_emulator, running_ingest, running_worker
from tests.test_webhooks import ACME, add_account, hook_settings, receiver
from tests.webhook_helpers import final_batches
from worker.dataplane.forever import FOREVER, kept_forever_by_accident
from worker.delivery import retention as retention_sweep
from worker.delivery.reconciler import reconcile
from worker.intake.pools import NumberPools, Session
from worker.runtime import Runtime
from worker.store import redis_now_ms

STATIC, DYNAMIC = "+74951110001", "+74951110002"


def no_ttl(rt: Runtime) -> list[str]:
    names = [str(k) for k in rt.redis.scan_iter(match=rt.keys.all_pattern(), count=1000)]
    pipe = rt.redis.pipeline(transaction=False)
    for name in names:
        pipe.ttl(name)
    return [name for name, ttl in zip(names, pipe.execute(), strict=True) if ttl == -1]


def test_every_key_without_a_ttl_after_a_full_run_is_on_the_allow_list(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with running_emulator(step_seconds=0.1, accounts=(Account(ACME, "acme"),)) as emulator, receiver() as (got, url):
        settings = hook_settings(make_settings, emulator)
        rt = Runtime(settings)
        add_account(settings, url)
        for number, kind in ((STATIC, "static"), (DYNAMIC, "dynamic")):
            assert ctl(settings, "routing", "add", number, "1001", "--kind", kind)[0] == 0
        lease = NumberPools(rt).lease(Session.model_validate({"counter": 1001, "ClientId": "777"}))
        assert lease.number == DYNAMIC
        with running_worker(settings, tmp_path), running_ingest(settings) as ingest:
            assert len(rt.producer.submit([make_call(1001, n) for n in range(12)]).accepted) == 12
            held = {"call_id": "held-1", "to": STATIC, "start": recent()}
            assert httpx.post(f"{ingest}/v1/calls", json=held).json()["status"] == "held"
            visit = {"call_id": "visit-1", "to": DYNAMIC, "start": recent(0)}
            answer = httpx.post(f"{ingest}/v1/calls", json=visit).json()
            assert answer["status"] == "accepted", answer
            wait_for(lambda: len(final_batches(rt, 1001)) >= 4, timeout=60, what="the batches final")
            wait_for(lambda: len(got.events("upload.final")) >= 4 and got.events("call.held"), timeout=30,
                     what="the notifications")  # fmt: skip
        left = no_ttl(rt)
        rt.close()
    assert left, "the run wrote no key without a TTL at all: the listing proves nothing"
    unexpected = kept_forever_by_accident(left, settings.namespace)
    assert unexpected == [], "keys without a TTL, not on the allow-list:\n" + "\n".join(unexpected)
    assert all(reason for _, reason in FOREVER)
    # And the check can fail: a batch record or a dedup hash without a TTL is named.
    stray = [f"{settings.namespace}:{{s1}}:batch:CTxS1B9Rabc", f"{settings.namespace}:{{s0}}:dd:3:7"]
    assert kept_forever_by_accident([*left, *stray], settings.namespace) == sorted(stray)


def test_final_records_of_an_earlier_release_get_their_retention(emulator: RunningEmulator, rt: Runtime) -> None:
    """As the release before the record retention left them: final records, rows and marks without a
    TTL, in the done index. The reconcile run's sweep gives each the retention left from its final
    time; one final longer ago than the retention expires at once and leaves the index."""
    now = redis_now_ms(rt.redis)
    retention = rt.settings.record_retention_seconds
    old = {"CT0aS0B1Rold0000001": now - 3_600_000, "CT0aS0B2Rold0000002": now - (retention + 60) * 1000}
    for batch_id, final_at in old.items():
        rt.redis.hset(rt.keys.batch(batch_id), mapping={"state": "PROCESSED", "final_at": final_at})
        rt.redis.rpush(rt.keys.rows(batch_id), "1,row")
        rt.redis.rpush(rt.keys.marks(batch_id), "seen:x")
        rt.redis.zadd(rt.keys.done(0), {batch_id: final_at})
    reconcile(rt)
    recent, expired = old
    assert 0 < rt.redis.ttl(rt.keys.batch(recent)) <= retention - 3_600
    assert 0 < rt.redis.ttl(rt.keys.rows(recent)) <= rt.settings.rows_retention_seconds
    assert 0 < rt.redis.ttl(rt.keys.marks(recent)) <= rt.settings.rows_retention_seconds
    assert rt.redis.ttl(rt.keys.batch(expired)) in (1, -2)  # its retention is over: it goes now
    assert rt.redis.zscore(rt.keys.done(0), expired) is None  # and leaves the index
    assert rt.redis.zscore(rt.keys.done(0), recent) is not None
    rt.redis.persist(rt.keys.batch(recent))
    reconcile(rt)  # one walk an hour per process: the next run does not look again
    assert rt.redis.ttl(rt.keys.batch(recent)) == -1
    retention_sweep.forget(rt)
    reconcile(rt)
    assert rt.redis.ttl(rt.keys.batch(recent)) > 0
