"""Late calls leave the held stream (issue 24, item 7): drop by id, reason, counter and age (CLI and
admin API), replay never re-holds a too_old call, retention expiry, held calls per reason. Real Redis,
the ingestion service in-process (tests/ingest_helpers.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson
from click.testing import CliRunner

from config.settings import Settings
from ctl.__main__ import main
from ctl.context import Context
from tasks.pipeline import expire_held
from tests.accounts_helpers import ADMIN_TOKEN
from tests.helpers import wait_for
from tests.ingest_helpers import STATIC, held_calls, ingest_settings, recent, service
from tests.pipeline import running_worker
from worker.intake.held import NO_IDENTIFIER, TOO_OLD, UNKNOWN_NUMBER
from worker.intake.service import build_intake
from worker.model.inbound import InboundCall
from worker.runtime import Runtime

AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
DAY = 86_400


def run(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), obj=Context(settings))
    return result.exit_code, result.output


def call(n: int, *, owner: str | None = None, days_ago: float = 0.05, number: str = "+74953330001") -> InboundCall:
    return InboundCall(
        provider="generic",
        call_id=f"late-{n}",
        started_at=int(time.time() - days_ago * DAY),
        answered=True,
        tracking_number=number,
        caller=f"+7916000{n:04d}",
        owner=owner,
    )


def hold(rt: Runtime, *items: tuple[InboundCall, str]) -> list[str]:
    ids = build_intake(rt).held.hold(list(items))
    assert all(ids)
    return [str(i) for i in ids]


def test_drop_by_id_reason_and_filter_keeps_owner_counts(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings, admin_api_token=ADMIN_TOKEN)
    with service(settings) as (client, rt):
        held = build_intake(rt).held
        a1, a2, a_late, op1, b1 = hold(
            rt,
            (call(1, owner="acct-a"), UNKNOWN_NUMBER),
            (call(2, owner="acct-a"), f"{NO_IDENTIFIER} (ClientId: bad)"),
            (call(3, owner="acct-a", days_ago=30), TOO_OLD),
            (call(4), UNKNOWN_NUMBER),
            (call(5, owner="acct-b", number=STATIC), UNKNOWN_NUMBER),
        )
        assert held.per_account() == {"acct-a": 3, "acct-b": 1}
        assert held.per_reason() == {NO_IDENTIFIER: 1, TOO_OLD: 1, UNKNOWN_NUMBER: 3}

        code, out = run(settings, "held", "drop", a1)
        assert code == 0 and a1 in out and "1 removed, 4 still held" in out
        assert held.per_account() == {"acct-a": 2, "acct-b": 1}
        code, out = run(settings, "held", "drop", a1, "--json")  # gone: an explicit id matching nothing
        assert code == 1 and "no held call with id" in out

        code, out = run(settings, "held", "drop", "--reason", TOO_OLD, "--json")
        assert code == 0 and [e["id"] for e in orjson.loads(out)] == [a_late]
        assert held.per_account() == {"acct-a": 1, "acct-b": 1}
        # A reason with a note matches by its first word.
        code, out = run(settings, "held", "drop", "--reason", NO_IDENTIFIER)
        assert code == 0 and a2 in out and held.per_account() == {"acct-b": 1}
        # By counter: STATIC routes to counter 101 (tests/ingest_helpers.py); the other number routes nowhere.
        code, out = run(settings, "held", "drop", "--counter", "101")
        assert code == 0 and b1 in out and held.per_account() == {}
        assert run(settings, "held", "drop")[0] == 2  # no id, no filter: a usage error
        code, out = run(settings, "held", "drop", "not-an-id")
        assert code == 2 and "not a held entry id" in out

        # Admin API: bearer token, 404 for an unknown id, 422 naming the field for a bad filter.
        assert client.delete(f"/admin/v1/held/{op1}").status_code == 401
        bad = client.post("/admin/v1/held/drop", json={"reason": "everything"}, headers=AUTH)
        assert bad.status_code == 422 and [e["field"] for e in bad.json()["errors"]] == ["reason"]
        assert "too_old" in bad.json()["error"]  # the rule names the reasons allowed
        assert client.post("/admin/v1/held/drop", json={}, headers=AUTH).status_code == 422
        assert held.count() == 1  # nothing removed by refused requests
        c1, c2 = hold(rt, (call(6, owner="acct-c"), UNKNOWN_NUMBER), (call(7, owner="acct-c", days_ago=30), TOO_OLD))
        gone = client.delete(f"/admin/v1/held/{c1}", headers=AUTH)
        assert gone.status_code == 200 and gone.json()["removed"] == 1 and held.per_account() == {"acct-c": 1}
        assert client.delete(f"/admin/v1/held/{c1}", headers=AUTH).status_code == 404
        assert client.delete("/admin/v1/held/not-an-id", headers=AUTH).status_code == 422
        dropped = client.post("/admin/v1/held/drop", json={"reason": TOO_OLD}, headers=AUTH)
        assert dropped.status_code == 200 and [e["id"] for e in dropped.json()["entries"]] == [c2]
        assert held.per_account() == {}
        stats = client.get("/admin/v1/held", headers=AUTH).json()
        assert stats == {"held": 1, "per_reason": {UNKNOWN_NUMBER: 1}, "per_account": {}}
        assert [
            e["id"]
            for e in client.post("/admin/v1/held/drop", json={"older_than_days": 0}, headers=AUTH).json()["entries"]
        ] == [op1]
        assert held.count() == 0


def test_replay_drops_a_too_old_call_and_never_reholds_it(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings)
    with service(settings) as (client, rt):
        old = {"call_id": "old-1", "to": STATIC, "from": "+79160000001", "start": recent(30 * DAY), "ClientId": "5"}
        assert client.post("/v1/calls", json=old).json() == {"status": "held", "reason": TOO_OLD}
        (owned,) = hold(rt, (call(8, owner="acct-a", days_ago=30), TOO_OLD))
        fresh = {"call_id": "new-1", "to": "+74953339999", "from": "+79160000002", "start": recent(), "ClientId": "6"}
        assert client.post("/v1/calls", json=fresh).json()["reason"] == UNKNOWN_NUMBER
        held = build_intake(rt).held
        before = [e.entry_id for e in held.entries()]
        assert held.per_account() == {"acct-a": 1}

        code, out = run(settings, "held", "replay", "--all", "--json")
        assert code == 0
        results = {r["id"]: r for r in orjson.loads(out)["results"]}
        late = [i for i in before if results[i]["status"] == "ignored"]
        assert len(late) == 2 and owned in late and all(results[i]["reason"].startswith(TOO_OLD) for i in late)
        # Only the unknown-number call stays, in place (same entry id): nothing was appended again.
        assert [e.entry_id for e in held.entries()] == [i for i in before if i not in late]
        assert [reason for reason, _ in held_calls(rt)] == [UNKNOWN_NUMBER]
        assert held.per_account() == {}


def test_held_calls_expire_after_the_retention_and_are_counted(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings)
    assert settings.held_retention_days == 22
    with service(settings) as (client, rt):
        hold(
            rt,
            (call(9, owner="acct-a"), TOO_OLD),
            (call(10), UNKNOWN_NUMBER),
            (call(11, owner="acct-a"), UNKNOWN_NUMBER),
        )
        held = build_intake(rt).held
        now_ms = int(time.time() * 1000)
        assert expire_held(rt, now_ms=now_ms + 21 * DAY * 1000) == 0  # not yet
        assert held.count() == 3 and held.per_account() == {"acct-a": 2}
        assert expire_held(rt, now_ms=now_ms + 23 * DAY * 1000) == 3  # what the reconcile tick runs
        assert held.count() == 0 and held.per_account() == {}
        rt.metrics.flush()
        assert rt.metrics.read()["held_expired"] == 3
        assert "calltrack_held_expired_total 3.0" in client.get("/metrics").text


def test_held_calls_per_reason_in_ctl_and_metrics(make_settings: Callable[..., Settings]) -> None:
    settings = ingest_settings(make_settings)
    with service(settings) as (client, rt):
        hold(
            rt,
            (call(12, days_ago=30), TOO_OLD),
            (call(13, days_ago=30), TOO_OLD),
            (call(14), f"{NO_IDENTIFIER} (ClientId: bad)"),
            (call(15), "a_word_nobody_knows"),
        )
        code, out = run(settings, "held", "list")
        assert code == 0 and "by reason: a_word_nobody_knows 1, no_identifier 1, too_old 2" in out
        code, out = run(settings, "held", "stats", "--json")
        stats = orjson.loads(out)
        assert code == 0 and stats["held"] == 4 and stats["retention_days"] == 22
        assert stats["per_reason"] == {"a_word_nobody_knows": 1, NO_IDENTIFIER: 1, TOO_OLD: 2}
        text = client.get("/metrics").text
        assert 'calltrack_held_calls{reason="too_old"} 2.0' in text
        assert 'calltrack_held_calls{reason="no_identifier"} 1.0' in text
        assert 'calltrack_held_calls{reason="other"} 1.0' in text  # an unknown word: a bounded label


def test_a_real_worker_expires_old_held_calls_on_the_reconcile_tick(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = ingest_settings(make_settings, reconcile_interval=0.5)
    rt = Runtime(settings)
    try:
        # An entry held 30 days ago (as the previous release wrote it: id time, fields, the owner's count).
        old_ms = int((time.time() - 30 * DAY) * 1000)
        old = call(17, owner="acct-a", days_ago=30)
        fields = {"reason": TOO_OLD, "call": old.to_json(), "at": str(old_ms), "owner": "acct-a"}
        rt.redis.xadd(rt.keys.held, fields, id=f"{old_ms}-0")  # type: ignore[arg-type]
        rt.redis.hincrby(rt.keys.held_owners(), "acct-a", 1)
        hold(rt, (call(16, owner="acct-a"), UNKNOWN_NUMBER))  # fresh: stays
        held = build_intake(rt).held
        assert held.count() == 2 and held.per_account() == {"acct-a": 2}
        with running_worker(settings, tmp_path):
            wait_for(lambda: held.count() == 1, timeout=30, what="the old held call expired")
        assert [e.call.call_id for e in held.entries()] == ["late-16"] and held.per_account() == {"acct-a": 1}
        rt.metrics.flush()
        assert rt.metrics.read()["held_expired"] == 1
    finally:
        rt.close()


def test_metrics_read_kept_reason_counts_and_a_recount_puts_them_right(make_settings: Callable[..., Settings]) -> None:
    """/metrics reads ``{held}:reasons`` (kept by hold.lua and held_release.lua), not the stream; an
    entry those scripts never saw (a release before the counts wrote it) shows after a recount, which
    /metrics runs when the last is over an hour old and the operator's figures run every time."""
    settings = ingest_settings(make_settings)

    def gauge(text: str, reason: str) -> float:
        line = next((ln for ln in text.splitlines() if ln.startswith(f'calltrack_held_calls{{reason="{reason}"}}')), "")
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    with service(settings) as (client, rt):
        held = build_intake(rt).held
        first, _ = hold(rt, (call(21), UNKNOWN_NUMBER), (call(22), TOO_OLD))
        text = client.get("/metrics").text  # the first scrape recounts: nothing was counted yet
        assert gauge(text, UNKNOWN_NUMBER) == 1 and gauge(text, TOO_OLD) == 1
        assert rt.redis.ttl(rt.keys.held_recounted()) > 3000
        # An entry the scripts did not count, as the release before the counts held it.
        rt.redis.xadd(rt.keys.held, {"reason": NO_IDENTIFIER, "call": call(23).to_json(), "at": "1"})
        hold(rt, (call(24), UNKNOWN_NUMBER))
        held.release([first])  # counted down by the release script
        text = client.get("/metrics").text
        assert gauge(text, UNKNOWN_NUMBER) == 1 and gauge(text, TOO_OLD) == 1
        assert gauge(text, NO_IDENTIFIER) == 0  # not seen: the kept counts are read, not the stream
        assert held.per_reason() == {NO_IDENTIFIER: 1, TOO_OLD: 1, UNKNOWN_NUMBER: 1}  # exact, and kept
        text = client.get("/metrics").text
        assert gauge(text, NO_IDENTIFIER) == 1 and gauge(text, UNKNOWN_NUMBER) == 1
        # A re-hold under another reason moves the count from the old reason to the new one.
        entry = next(e for e in held.entries() if e.call.call_id == "late-24")
        held.rehold([(entry, entry.call, f"{NO_IDENTIFIER} (note)")])
        assert orjson.loads(orjson.dumps(rt.redis.hgetall(rt.keys.held_reasons()))) == {
            NO_IDENTIFIER: "2",
            TOO_OLD: "1",
        }
        rt.redis.delete(rt.keys.held_recounted())  # an hour later: the next scrape recounts
        rt.redis.hset(rt.keys.held_reasons(), "too_old", 7)  # whatever drifted
        text = client.get("/metrics").text
        assert gauge(text, TOO_OLD) == 1 and gauge(text, NO_IDENTIFIER) == 2
