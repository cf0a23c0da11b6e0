"""Issue 22: one client's flood of sealed batches does not queue in front of another client's batch.

The upload tasks of one dispatch carry a priority (``worker.delivery.dispatch.fair_priorities``): each
client's first batch 0, its later ones 3; the Redis broker hands out priority 0 first. Checked on the
real parts: Redis, the registry, drain, the broker and a Celery worker uploading to the emulator.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from celery import current_app
from cryptography.fernet import Fernet

from config.settings import Settings
from emulator.config import Account
from tasks import pipeline as pipeline_tasks
from tests.accounts_helpers import account_settings
from tests.helpers import make_call, wait_for
from tests.pipeline import running_emulator, running_worker
from worker.accounts.model import AccountIn, parse
from worker.app import create_app
from worker.delivery import dispatch
from worker.delivery.drain import drain
from worker.model.kinds import Bucket
from worker.runtime import Runtime

ACME = "AQAAAAAacmeFairToken000000000000001"
BETA = "AQAAAAAbetaFairToken000000000000002"
SEEDS = (Account(ACME, "acme"), Account(BETA, "beta"))
A_COUNTERS = (1001, 1002, 1003, 1004)
B_COUNTER = 2001
LOOSE_COUNTER = 3001  # in no account: a client of its own


def _seal(settings: Settings) -> tuple[Runtime, dict[int, str]]:
    """Accounts A (four counters) and B (one); one call per counter sealed into one batch each."""
    rt = Runtime(settings)
    rt.accounts.sync([
        parse(AccountIn, {"id": "acme", "tokens": [{"token": ACME}], "counters": [{"id": c} for c in A_COUNTERS]}),
        parse(AccountIn, {"id": "beta", "tokens": [{"token": BETA}], "counters": [{"id": B_COUNTER}]}),
    ])  # fmt: skip
    counters = (*A_COUNTERS, B_COUNTER, LOOSE_COUNTER)
    assert len(rt.producer.submit([make_call(c, n) for n, c in enumerate(counters)]).accepted) == len(counters)
    sealed = drain(rt, seal_all=True).sealed
    by_counter = {Bucket.decode(str(rt.redis.hget(rt.keys.batch(b), "bucket"))).counter_id: b for b in sealed}
    assert set(by_counter) == set(counters)
    return rt, by_counter


def test_each_clients_first_batch_goes_first(make_settings: Callable[..., Settings]) -> None:
    with running_emulator(accounts=SEEDS) as emulator:
        rt, batch = _seal(account_settings(make_settings, emulator))
        order = [batch[c] for c in (*A_COUNTERS, B_COUNTER, LOOSE_COUNTER)]
        priorities = dict(dispatch.fair_priorities(rt, [*order, "CTgoneS0B1"]))
        assert [priorities[batch[c]] for c in A_COUNTERS] == [0, 3, 3, 3]  # one account: one batch first
        assert priorities[batch[B_COUNTER]] == 0 and priorities[batch[LOOSE_COUNTER]] == 0
        assert priorities["CTgoneS0B1"] == 0  # a batch whose record is gone is nobody's later batch
        assert dispatch.fair_priorities(rt, ["CTgoneS0B1", "CTgoneS1B2"]) == [("CTgoneS0B1", 0), ("CTgoneS1B2", 0)]
        assert dispatch.fair_priorities(rt, []) == []
        # A worker whose key ring cannot read the accounts still orders them (no account is decoded).
        stranger = Runtime(account_settings(make_settings, emulator, secret_keys=Fernet.generate_key().decode()))
        assert {u.account for u in stranger.accounts.unreadable()} == {"acme", "beta"}
        assert dict(dispatch.fair_priorities(stranger, order)) == {b: priorities[b] for b in order}
        stranger.close()
        rt.close()


def test_a_flood_of_one_client_does_not_queue_ahead_of_another(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A's four batches are dispatched before B's one, with no worker running; one worker thread then
    uploads B's second, right after A's first, not fifth."""
    with running_emulator(accounts=SEEDS) as emulator:
        settings = account_settings(make_settings, emulator)
        rt, batch = _seal(settings)
        previous = current_app._get_current_object()  # type: ignore[attr-defined]
        app = create_app(settings)
        app.set_current()  # the tasks below go to this namespace's queues on the test Redis, nowhere else
        try:
            assert current_app.conf.broker_url == settings.broker_url
            pipeline_tasks._send_uploads(rt, [batch[c] for c in (*A_COUNTERS, B_COUNTER)])
        finally:
            previous.set_current()
        with running_worker(settings, tmp_path, concurrency=1, beat=False):
            wait_for(lambda: len(emulator.admin.uploads(with_rows=False)) == 5, timeout=60, what="five uploads")
        order = [int(u["counter"]) for u in sorted(emulator.admin.uploads(with_rows=False), key=lambda u: u["id"])]
        assert order[1] == B_COUNTER, order
        assert order[0] == A_COUNTERS[0] and sorted(order[2:]) == list(A_COUNTERS[1:]), order
        rt.close()
