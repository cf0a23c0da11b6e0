"""A restore of Redis from a backup taken with work in flight (issue 23, item 4): detected at Metrica
before anything is posted again, the shard held (drain and uploads), the operator told and asked.

The backup is every key of the test's namespace as ``DUMP`` with its TTL, put back with ``RESTORE``:
the same data a restored server loads. The shared test Redis is not restarted, so the process is told
to check again (``forget_checks``) as a new ``run_id`` would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner
from redis import Redis

from config.settings import Settings
from ctl.__main__ import main
from ctl.context import Context
from ctl.doctor import check_restore
from emulator.server import RunningEmulator
from ingest.console import pages
from tests.helpers import make_call
from worker.delivery import restore, restore_hold, uploader
from worker.delivery.drain import drain
from worker.delivery.uploader import UploadOutcome
from worker.errors import RestoreHeldError
from worker.ops import overview
from worker.ops.store_state import store_gauges
from worker.runtime import Runtime

Backup = list[tuple[str, bytes, int]]


@pytest.fixture
def rt(emulator: RunningEmulator, make_settings: Callable[..., Settings]) -> Iterator[Runtime]:
    emulator.admin.reset()
    runtime = Runtime(make_settings(metrica_base_url=emulator.base_url, shards=1))
    yield runtime
    runtime.close()


def backup(redis_url: str, namespace: str) -> Backup:
    raw = Redis.from_url(redis_url)
    try:
        keys = [k.decode() for k in raw.scan_iter(match=f"{namespace}:*", count=1000)]
        return [(k, raw.dump(k), raw.pttl(k)) for k in keys if raw.exists(k)]  # type: ignore[misc]
    finally:
        raw.close()


def put_back(redis_url: str, namespace: str, saved: Backup) -> None:
    raw = Redis.from_url(redis_url)
    try:
        for key in list(raw.scan_iter(match=f"{namespace}:*", count=1000)):
            raw.delete(key)
        for key, value, ttl in saved:
            raw.restore(key, max(ttl, 0), value)
    finally:
        raw.close()
    restore.forget_checks()


def at_metrica(emulator: RunningEmulator) -> list[str]:
    return [str(u["comment"]) for u in emulator.admin.uploads(with_rows=False)]


def ctl(settings: Settings, *args: str) -> str:
    result = CliRunner().invoke(main, list(args), obj=Context(settings), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_restore_of_an_unsettled_backup_holds_the_shard_until_the_operator_confirms(
    rt: Runtime, emulator: RunningEmulator, redis_url: str, namespace: str
) -> None:
    rt.producer.submit([make_call(101, i) for i in range(4)])
    (first,) = drain(rt, seal_all=True).sealed
    assert uploader.upload_batch(rt, first) is UploadOutcome.POSTED
    rt.producer.submit([make_call(101, i) for i in range(4, 9)])
    saved = backup(redis_url, namespace)  # taken with 5 calls in the stream, not yet drained
    (second,) = drain(rt, seal_all=True).sealed
    assert uploader.upload_batch(rt, second) is UploadOutcome.POSTED
    put_back(redis_url, namespace, saved)  # the second batch is forgotten; its calls are back in the stream

    (again,) = drain(rt, seal_all=True).sealed
    assert again != second and again.split("R")[0] == second.split("R")[0]  # its seq, another nonce
    with pytest.raises(RestoreHeldError):
        uploader.upload_batch(rt, again)
    assert at_metrica(emulator) == [first, second]  # nothing posted twice
    assert restore_hold.held(rt, 0)["evidence"] == second

    # Held: the drain leaves the shard alone; the operator sees it in ctl, /metrics and doctor.
    rt.producer.submit([make_call(101, 50)])
    assert drain(rt, seal_all=True).read == 0
    shown = ctl(rt.settings, "restore", "status")
    assert second in shown and "another nonce" in shown
    gauges = {m.name: m for m in store_gauges(rt.redis, rt.keys)}
    assert gauges["calltrack_restore_held_shards"].samples[0].value == 1
    (check,) = check_restore(rt)
    assert check.status == "fail" and "ctl restore confirm 0" in check.detail
    assert [r["evidence"] for r in pages.fleet(rt)["restored"]] == [second]  # the console's fleet page
    assert overview.status(rt)[0].waiting == ["restore_held"]  # ctl status
    with pytest.raises(RestoreHeldError):
        uploader.upload_batch(rt, again)  # still held

    assert "shard 0 released" in ctl(rt.settings, "restore", "confirm", "0")
    assert restore_hold.held_shards(rt) == {}
    assert uploader.upload_batch(rt, again) is UploadOutcome.POSTED  # the operator accepted the double
    restore.forget_checks()  # a later start does not hold the shard again for the evidence accepted
    (later,) = drain(rt, seal_all=True).sealed
    assert uploader.upload_batch(rt, later) is UploadOutcome.POSTED
    assert at_metrica(emulator) == [first, second, again, later]
    assert "no shard is held" in ctl(rt.settings, "restore", "status")


def test_a_restore_seen_by_a_seq_above_the_shards_counter(
    rt: Runtime, emulator: RunningEmulator, redis_url: str, namespace: str
) -> None:
    """The backup knew fewer sequence numbers than Metrica holds: the first upload after it is held."""
    rt.producer.submit([make_call(101, 0)])
    saved = backup(redis_url, namespace)
    posted: list[str] = []
    for start in (1, 2):
        rt.producer.submit([make_call(101, start)])
        (batch_id,) = drain(rt, seal_all=True).sealed
        assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
        posted.append(batch_id)
    put_back(redis_url, namespace, saved)
    (again,) = drain(rt, seal_all=True).sealed  # seq 1 again, Metrica holds seq 1 and 2
    with pytest.raises(RestoreHeldError):
        uploader.upload_batch(rt, again)
    assert restore_hold.held(rt, 0)["evidence"] in posted
    above, reused = (restore.evidence(rt, 0, [batch_id]) for batch_id in reversed(posted))
    assert above is not None and above.why == "seq 2 is above the shard's sequence 1"
    assert reused is not None and reused.why == "seq 1 was handed out again with another nonce"
    # Confirmed: every forgotten upload is accepted (not only the evidence), and new batches are
    # numbered past them, so the next start's check holds nothing.
    assert restore.confirm(rt, 0) is not None
    assert restore.evidence(rt, 0, posted) is None
    restore.forget_checks()
    assert uploader.upload_batch(rt, again) is UploadOutcome.POSTED
    rt.producer.submit([make_call(101, 9)])
    (later,) = drain(rt, seal_all=True).sealed
    assert int(later.split("B")[1].split("R")[0]) > restore.SEQ_JUMP
    assert uploader.upload_batch(rt, later) is UploadOutcome.POSTED
    assert restore_hold.held_shards(rt) == {}


def test_an_ordinary_run_is_never_taken_for_a_restore(rt: Runtime, emulator: RunningEmulator) -> None:
    """Batches uploaded out of their sealing order, by processes started anew: no hold."""
    sealed: list[str] = []
    for counter in (101, 102, 101):
        rt.producer.submit([make_call(counter, len(sealed))])
        sealed.extend(drain(rt, seal_all=True).sealed)
    for batch_id in reversed(sealed):
        restore.forget_checks()
        assert uploader.upload_batch(rt, batch_id) is UploadOutcome.POSTED
    assert restore_hold.held_shards(rt) == {}


def test_a_clusters_incarnation_names_every_master(cluster_settings: Callable[..., Settings]) -> None:
    """On a cluster a restart of any master (a restore, a failover) makes every counter checked again."""
    rt = Runtime(cluster_settings())
    try:
        first = restore.incarnation(rt.redis)
        assert len(first.split(",")) == 3 and all(len(run_id) == 40 for run_id in first.split(","))
        assert restore.incarnation(rt.redis) == first
    finally:
        rt.close()


def test_confirm_names_what_it_needs(rt: Runtime) -> None:
    """No shard given, or one the deployment does not have: a usage error naming it; nothing changes."""
    runner = CliRunner()
    none = runner.invoke(main, ["restore", "confirm"], obj=Context(rt.settings))
    assert none.exit_code == 2 and "give SHARDS or --all" in none.output
    wrong = runner.invoke(main, ["restore", "confirm", "7"], obj=Context(rt.settings))
    assert wrong.exit_code == 2 and "shard must be 0..0, got 7" in wrong.output
    assert "shard 0 was not held" in ctl(rt.settings, "restore", "confirm", "0")
    assert restore_hold.held(rt, 0) == {}
