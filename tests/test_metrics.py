"""Metrics scraped over HTTP during an end-to-end run: provider webhooks into the ingestion service,
a real worker and beat, uploads to the emulator; then the standalone exporter serves the same numbers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from ingest.app import create_app
from ingest.signatures import twilio_signature
from standalone.redis_server import free_port
from tests.helpers import wait_for
from tests.ingest_helpers import STATIC, TWILIO_SID, TWILIO_TOKEN, add_routes, ingest_settings
from tests.pipeline import running_emulator, running_worker
from worker.ops import scrape as scraping
from worker.runtime import Runtime

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The ingestion service under uvicorn on a free port, in a thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20, what="uvicorn started")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def twilio_form(n: int, *, client_id: str | None = "1556018960123456789") -> dict[str, str]:
    form = {
        "AccountSid": TWILIO_SID,
        "CallSid": f"CA{n:032d}",
        "CallStatus": "completed",
        "CallDuration": "42",
        "Direction": "inbound",
        "To": STATIC,
        "From": f"+7916{n:07d}",
        "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(time.time() - 120)),
    }
    if client_id:
        form["SipHeader_X-Client-Id"] = client_id
    return form


def test_metrics_during_an_end_to_end_run(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with running_emulator(step_seconds=0.1) as emulator:
        settings = ingest_settings(make_settings, metrica_base_url=emulator.base_url, flush_max_age=0.3)
        rt = Runtime(settings)
        add_routes(rt)
        with serving(settings) as base:
            url = f"{base}/twilio/voice"

            def post(form: dict[str, str], signature: str | None = None) -> int:
                sig = signature if signature is not None else twilio_signature(TWILIO_TOKEN, url, form.items())
                headers = {"X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"}
                return httpx.post(url, content=urlencode(form), headers=headers, timeout=10).status_code

            # Before any worker runs: calls wait in the stream, the lag shows.
            for n in range(6):
                assert post(twilio_form(n)) == 200
            assert post(twilio_form(0)) == 200  # a repeated webhook: dropped by drain
            assert post(twilio_form(50, client_id=None)) == 200  # no identifier: held
            assert post(twilio_form(51), signature="bad") == 403
            generic = {"call_id": "g-1", "to": STATIC, "start": int(time.time()) - 60, "ClientId": "77"}
            assert httpx.post(f"{base}/v1/calls", json=generic, timeout=10).status_code == 200
            assert httpx.post(f"{base}/v1/calls", json={"call_id": "g-2"}, timeout=10).status_code == 422
            before = scrape(f"{base}/metrics")
            assert value(before, "calltrack_redis_up") == 1
            assert value(before, "calltrack_calls_received_total", provider="twilio") == 9
            assert value(before, "calltrack_calls_accepted_total", provider="twilio") == 7
            assert value(before, "calltrack_calls_held_total", provider="twilio", reason="no_identifier") == 1
            assert value(before, "calltrack_calls_rejected_total", provider="twilio", reason="signature") == 1
            assert value(before, "calltrack_calls_accepted_total", provider="generic") == 1
            assert value(before, "calltrack_calls_rejected_total", provider="generic", reason="to:missing") == 1
            shard = str(rt.keys.shard_of(101))
            assert value(before, "calltrack_stream_lag_calls", shard=shard) == 8
            assert value(before, "calltrack_stream_oldest_pending_age_seconds", shard=shard) >= 0
            assert value(before, "calltrack_held_calls", reason="no_identifier") == 1

            with running_worker(settings, tmp_path):
                wait_for(
                    lambda: (
                        value(
                            scrape(f"{base}/metrics"), "calltrack_batches_final_total", kind="calls", status="PROCESSED"
                        )
                        >= 1
                        and emulator.admin.stats()["rows"] == 7
                    ),
                    timeout=60,
                    what="the calls PROCESSED",
                )
                during = scrape(f"{base}/metrics")
        rt.close()

    assert value(during, "calltrack_calls_drained_total") == 8
    assert value(during, "calltrack_calls_deduplicated_total") == 1
    assert value(during, "calltrack_batches_sealed_total") >= 1
    assert value(during, "calltrack_batches_uploaded_total", kind="calls", how="posted") >= 1
    assert value(during, "calltrack_upload_tasks_total", outcome="posted") >= 1
    assert (
        value(during, "calltrack_metrica_requests_total", endpoint="upload_calls", result="ok", error_type="none") >= 1
    )
    assert value(during, "calltrack_metrica_requests_total", endpoint="list_calls", result="ok", error_type="none") >= 1
    assert value(during, "calltrack_stream_lag_calls", shard=shard) == 0
    assert value(during, "calltrack_batches", state="done") >= 1
    assert value(during, "calltrack_batches", state="quarantined") == 0
    logins = [labels for (name, labels) in during if name == "calltrack_quota_left"]
    assert logins and {dict(labels)["purpose"] for labels in logins} == {"any", "upload", "poll"}
    assert all(v > 0 for (name, _), v in during.items() if name == "calltrack_quota_left")
    # No phone number, token or call id is ever a label value.
    text = repr(during)
    for secret in (TWILIO_TOKEN, "+7916", "7916000", "CA000", "g-1", STATIC):
        assert secret not in text


def test_the_exporter_serves_the_same_numbers(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    rt = Runtime(settings)
    rt.metrics.incr("calls_received", "zadarma", amount=3)
    rt.metrics.incr("batches_quarantined", "calls")
    from prometheus_client import start_http_server

    port = free_port()
    server, thread = start_http_server(port, "127.0.0.1", registry=scraping.registry(rt.redis, rt.keys, settings))
    try:
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        thread.join(5)
        rt.close()
    assert value(samples, "calltrack_calls_received_total", provider="zadarma") == 3
    assert value(samples, "calltrack_batches_quarantined_total", kind="calls") == 1
    assert value(samples, "calltrack_processes_alive", role="worker") == 0


def test_metrics_say_when_redis_is_down(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(redis_url="redis://127.0.0.1:1/0")
    rt = Runtime(settings)
    text = scraping.render(scraping.registry(rt.redis, rt.keys, settings)).decode()
    assert "calltrack_redis_up 0.0" in text
    rt.metrics.incr("calls_received", "generic")  # counting never raises
