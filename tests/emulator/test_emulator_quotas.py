"""Quotas: 30 requests/s per IP, 3 parallel requests and N requests per day per login; 429 or 420."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from emulator.config import EmulatorConfig, QuotaConfig
from emulator.server import RunningEmulator
from tests.emulator.support import PAST, TOKENS, Metrica, calls_csv, error_of

pytest_plugins = ["tests.emulator.fixtures"]


def test_requests_per_ip_per_second(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.set_quotas(requests_per_ip_per_second=30)
    emu.admin.settings(trust_forwarded_for=True)
    first_ip = {"X-Forwarded-For": "10.0.0.1, 192.168.0.1"}
    answers = [metrica.list(101, headers=first_ip).status_code for _ in range(30)]
    assert answers == [200] * 30
    rejected = metrica.list(101, headers=first_ip)
    assert rejected.status_code == 429
    assert error_of(rejected)[:2] == (429, "quota_requests_by_ip")
    # Another egress IP has its own window; the same IP is let in again after the second passes.
    assert metrica.list(101, headers={"X-Forwarded-For": "10.0.0.2"}).status_code == 200
    assert metrica.list(102, token=TOKENS["alice"], headers=first_ip).status_code == 429
    emu.admin.advance_clock(1.01)
    assert metrica.list(101, headers=first_ip).status_code == 200
    assert emu.admin.stats()["quota_rejections"] == {"quota_requests_by_ip": 2}


def test_forwarded_for_is_ignored_unless_trusted(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.set_quotas(requests_per_ip_per_second=5)
    for n in range(5):
        assert metrica.list(101, headers={"X-Forwarded-For": f"10.0.1.{n}"}).status_code == 200
    assert metrica.list(101, headers={"X-Forwarded-For": "10.0.1.99"}).status_code == 429
    # The admin API has no quota.
    assert emu.admin.health()


def test_three_parallel_requests_per_login(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.set_faults(latency=0.6, kinds="list")
    url = metrica.base_url + "/management/v1/counter/101/offline_conversions/calls_uploadings"

    def call(token: str) -> httpx.Response:
        return httpx.get(url, headers={"Authorization": f"OAuth {token}"}, timeout=30)

    with ThreadPoolExecutor(max_workers=5) as pool:
        alice = [pool.submit(call, TOKENS["alice"]) for _ in range(4)]
        carol = pool.submit(call, TOKENS["carol"])  # another login sharing the counter is not affected
        responses = [f.result() for f in alice]
        assert carol.result().status_code == 200
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 200, 200, 429]
    rejected = next(r for r in responses if r.status_code == 429)
    assert error_of(rejected)[1] == "quota_parallel_requests"
    # Slots are released when requests end.
    emu.admin.clear_faults()
    assert metrica.list(101).status_code == 200


def test_uploads_hold_their_slot_while_processed(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.set_quotas(parallel_requests_per_login=1)
    emu.admin.set_faults(latency=0.6, kinds="upload")
    poller = Metrica(metrica.base_url)
    with ThreadPoolExecutor(max_workers=1) as pool:
        upload = pool.submit(metrica.upload, 101, calls_csv(f"1,{PAST}"))
        # Poll until the in-flight upload is seen holding the only slot.
        statuses = set()
        while not upload.done():
            status = poller.list(101).status_code
            statuses.add(status)
            if status == 429:
                break
        assert upload.result().status_code == 200
    poller.close()
    assert 429 in statuses


def test_requests_per_login_per_day_reset_at_midnight_utc(metrica: Metrica, emu: RunningEmulator) -> None:
    """Each method group has its own day (quotas page): reads (client_read) and writes (client_write)."""
    emu.admin.set_quotas(requests_per_login_per_day=5)
    emu.admin.set_clock("2030-03-04T23:59:50Z", frozen=True)
    assert [metrica.list(101).status_code for _ in range(4)] == [200] * 4
    assert metrica.status(101, 1).status_code == 404  # the 5th read of the day (admitted, then not found)
    read = metrica.list(101)
    assert read.status_code == 429 and error_of(read)[1] == "quota_requests_by_uid"
    for _ in range(5):  # client_write is counted apart: polls never starve uploads
        assert metrica.upload(101, calls_csv(f"1,{PAST}")).status_code == 200
    rejected = metrica.upload(101, calls_csv(f"1,{PAST}"))
    assert rejected.status_code == 429
    assert error_of(rejected)[1] == "quota_requests_by_uid"
    assert emu.admin.logins()["alice"]["requests_today_by_group"] == {"client_read": 5, "client_write": 5}
    assert metrica.list(201, token=TOKENS["bob"]).status_code == 200  # per login
    emu.admin.advance_clock(9)  # 23:59:59
    assert metrica.list(101).status_code == 429
    emu.admin.advance_clock(2)  # 00:00:01 next day
    assert metrica.list(101).status_code == 200
    assert len(emu.admin.uploads()) == 5


def test_quota_status_420_from_config(start_emulator: Callable[[EmulatorConfig], RunningEmulator]) -> None:
    config = EmulatorConfig(quotas=QuotaConfig(requests_per_login_per_day=1, http_status=420), clock_frozen=True)
    client = Metrica(start_emulator(config).base_url, token="demo-token")
    try:
        assert client.list(1).status_code == 200
        response = client.list(1)
        assert response.status_code == 420
        assert error_of(response)[:2] == (420, "quota_requests_by_uid")
    finally:
        client.close()


def test_quota_status_and_switches_at_run_time(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.set_quotas(requests_per_ip_per_second=1, http_status=420)
    assert metrica.list(101).status_code == 200
    assert error_of(metrica.list(101))[:2] == (420, "quota_requests_by_ip")
    emu.admin.set_quotas(requests_per_ip_per_second=None)
    assert metrica.list(101).status_code == 200
    current = emu.admin.set_quotas(parallel_requests_per_login=0)
    assert current["parallel_requests_per_login"] is None
    assert current["http_status"] == 420


def test_two_tokens_of_one_login_share_the_quota_and_the_peak_is_recorded(
    metrica: Metrica, emu: RunningEmulator
) -> None:
    second = emu.admin.issue_token("alice")["access_token"]  # an OAuth token of the same login
    emu.admin.set_faults(latency=0.6, kinds="list")
    url = metrica.base_url + "/management/v1/counter/101/offline_conversions/calls_uploadings"

    def call(token: str) -> httpx.Response:
        return httpx.get(url, headers={"Authorization": f"OAuth {token}"}, timeout=30)

    with ThreadPoolExecutor(max_workers=5) as pool:
        futures = [pool.submit(call, t) for t in (TOKENS["alice"], second, TOKENS["alice"], second, TOKENS["alice"])]
        codes = sorted(f.result().status_code for f in futures)
    assert codes == [200, 200, 200, 429, 429]
    alice = emu.admin.logins()["alice"]
    assert alice["peak_parallel"] == 3 and alice["in_flight"] == 0
    assert alice["quota_rejections"] == {"quota_parallel_requests": 2, "status.429": 2}
    assert alice["requests"] == 3
    emu.admin.reset_login_stats()
    assert emu.admin.logins() == {}


def test_per_ip_answers_are_counted_against_the_login(metrica: Metrica, emu: RunningEmulator) -> None:
    emu.admin.set_quotas(requests_per_ip_per_second=1, http_status=420)
    assert metrica.list(101).status_code == 200
    assert metrica.list(201, token=TOKENS["bob"]).status_code == 420
    assert emu.admin.logins()["bob"]["quota_rejections"] == {"quota_requests_by_ip": 1, "status.420": 1}
    assert emu.admin.stats()["logins"]["alice"]["requests"] == 1
