"""Standalone mode: Redis, the Metrica emulator, a Celery worker with beat, the ingestion service
(which also serves the metrics), Flower, and a stream of sample calls sent to the ingestion service
in each provider's own format, all from one command, until Ctrl-C (or, with ``--once``, until every
upload is PROCESSED).

    python -m standalone.run [--once] [--calls 600] [--timeout 120]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from redis import Redis

from config.settings import load_settings
from emulator.client import EmulatorAdmin
from standalone.feed import Feeder, demo_env, demo_routes
from standalone.handover import generated_secret, remove_demo_file, write_demo_file
from standalone.processes import ROOT, Children
from standalone.redis_server import RedisServer, answers, configured_url, free_port
from standalone.site import DEMO_COUNTER, DEMO_STATIC_NUMBER, visit_and_call, where_is
from worker.intake.service import build_intake
from worker.ops import overview
from worker.runtime import Runtime

VAR = ROOT / "var" / "standalone"
DEMO_NAMESPACE = "demo"
COUNTERS = (101, 202, 303)


def _generated_password(env: dict[str, str], what: str) -> str:
    """A fresh random password for ``what`` (``flower``, ``console``) into ``env`` and a file only the
    user may read; answers the file's path for the banner."""
    path = generated_secret(VAR, env, f"{what}-password", f"CALLTRACK_{what.upper()}_PASSWORD")
    return str(path.relative_to(ROOT))


def _generated_token(env: dict[str, str], what: str) -> str | None:
    """The ``what`` API's token (``admin``, ``status``): generated into var/standalone/<what>-token (mode
    0600) unless one was exported; answers the file's path, or None when the exported one is used."""
    variable = f"CALLTRACK_{what.upper()}_API_TOKEN"
    if os.environ.get(variable):
        return None
    return str(generated_secret(VAR, env, f"{what}-token", variable, nbytes=24).relative_to(ROOT))


def sample_calls(start: int, count: int) -> list[dict[str, Any]]:
    """Calls as a call tracker would send them: three counters, ClientId and Yclid mixed."""
    now = int(datetime.now(UTC).timestamp())
    calls = []
    for n in range(start, start + count):
        counter = COUNTERS[n % len(COUNTERS)]
        answered = n % 5 != 0
        call: dict[str, Any] = {
            "counter_id": counter,
            "call_id": f"demo-{now}-{n}",
            "provider": "demo",
            "DateTime": now - 60 - n % 600,
            "PhoneNumber": f"+7495{n % 10_000_000:07d}",
            "CallMissed": not answered,
            "TalkDuration": (n * 7) % 400 if answered else 0,
            "HoldDuration": n % 25,
            "StaticCall": n % 4 == 0,
            "Tag": "demo",
            "URL": f"https://shop.example/landing/{n % 12}",
        }
        if n % 2:
            call["ClientId"] = str(1_700_000_000_000_000_000 + n)
        else:
            call["Yclid"] = str(5_000_000_000_000_000 + n)
        calls.append(call)
    return calls


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="./scripts/run", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--once", action="store_true", help="exit once every upload is PROCESSED")
    parser.add_argument("--calls", type=int, default=600, help="sample calls to send at start (default 600)")
    parser.add_argument("--timeout", type=float, default=120.0, help="with --once: give up after this many seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    children = Children(VAR / "logs")
    redis_server: RedisServer | None = None
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        # --- Redis -------------------------------------------------------------------------
        redis_url = configured_url()
        if answers(redis_url):
            print(f"redis      {redis_url} (configured)")
        else:
            redis_server = RedisServer(data_dir=VAR / "redis").start()
            redis_url = redis_server.url
            print(f"redis      {redis_url} (started {redis_server.binary}, AOF in {redis_server.data_dir})")
        env = {
            "REDIS_URL": redis_url,
            "CALLTRACK_REDIS_URL": redis_url,
            "CALLTRACK_FLUSH_MAX_AGE": "3",
            "CALLTRACK_DRAIN_INTERVAL": "1",
            "CALLTRACK_RECONCILE_INTERVAL": "2",
            # Metrica's emulator processes at once: ask for an upload's status soon, not after 120 s.
            "CALLTRACK_RECONCILE_FIRST_POLL_SECONDS": os.environ.get("CALLTRACK_RECONCILE_FIRST_POLL_SECONDS", "2"),
            "CALLTRACK_LOG_FORMAT": "json",
            "CALLTRACK_HEARTBEAT_DIR": str(VAR),
            # The sample Zadarma calls lease pool numbers from one address (standalone/feed.py).
            "CALLTRACK_SESSION_RATE_PER_IP": os.environ.get("CALLTRACK_SESSION_RATE_PER_IP", "1000"),
            "CALLTRACK_POOL_LEASES_PER_ADDRESS": os.environ.get("CALLTRACK_POOL_LEASES_PER_ADDRESS", "1000"),
            "CALLTRACK_POOL_LEASES_PER_NETWORK": os.environ.get("CALLTRACK_POOL_LEASES_PER_NETWORK", "1000"),
            # The shop's static number, which the site tag swaps for a pool number (standalone/site.py).
            "CALLTRACK_POOL_FALLBACK_NUMBERS": f"{DEMO_COUNTER}={DEMO_STATIC_NUMBER}",
            **demo_env(),
        }
        if os.environ.get("CALLTRACK_NAMESPACE") is None:
            env["CALLTRACK_NAMESPACE"] = DEMO_NAMESPACE
        # --- Emulator ----------------------------------------------------------------------
        base = load_settings()
        emulator_url = str(base.emulator_url).rstrip("/")
        if base.metrica_token is None and not base.metrica_counter_tokens:
            # The one-command mode is where the emulator belongs: asked for explicitly, on loopback.
            env["CALLTRACK_METRICA_EMULATOR"] = "true"
            # A demo shows its uploads at once: a new counter's data does not wait the day Metrica advises.
            env["CALLTRACK_COUNTER_JOIN_WAIT"] = os.environ.get("CALLTRACK_COUNTER_JOIN_WAIT", "warn")
            port = urlsplit(emulator_url).port or 8765
            try:
                EmulatorAdmin(emulator_url, timeout=1).health()
                port = free_port()  # something already listens there: take another port
            except Exception:  # noqa: S110 - nothing listens: the port is ours
                pass
            emulator_url = f"http://127.0.0.1:{port}"
            env["CALLTRACK_EMULATOR_URL"] = emulator_url
            children.python(
                "emulator",
                ["-m", "emulator", "--port", str(port), "--config", str(ROOT / "standalone" / "emulator-demo.toml")],
                env,
            )
            print(f"emulator   {emulator_url}/  (its page lists every upload and its status)")
        else:
            print(f"metrica    {base.api_base_url} (real API: tokens are configured)")
        ingest_port = _port(base.ingest_port)
        flower_port = _port(base.flower_port)
        env["CALLTRACK_INGEST_PORT"] = str(ingest_port)
        env["CALLTRACK_FLOWER_PORT"] = str(flower_port)
        flower_auth = "(user and password from CALLTRACK_FLOWER_USER / _PASSWORD)"
        if base.flower_password is None:
            flower_auth = f"(user {base.flower_user}, password in {_generated_password(env, 'flower')})"
        console_auth = "(user and password from CALLTRACK_CONSOLE_USER / _PASSWORD)"
        if base.console_password is None:  # the console has its own password, never another credential
            console_auth = f"(user {base.console_user}, password in {_generated_password(env, 'console')})"
        oauth_secret_file = None
        if "CALLTRACK_METRICA_EMULATOR" in env and not base.oauth_client_id:
            # The emulator plays Yandex ID too: `ctl accounts connect` gives its link, never a real one.
            env["CALLTRACK_OAUTH_CLIENT_ID"] = "calltrack-demo"
            oauth_secret_file = str(
                generated_secret(VAR, env, "oauth-client-secret", "CALLTRACK_OAUTH_CLIENT_SECRET").relative_to(ROOT)
            )
        admin_token_file = _generated_token(env, "admin")
        status_token_file = _generated_token(env, "status")
        os.environ.update(env)
        settings = load_settings()
        if settings.uses_emulator and settings.namespace == DEMO_NAMESPACE:
            # The emulator starts empty, so the demo's earlier Redis state would point at uploads
            # it no longer holds: start the demo namespace afresh.
            _clear_namespace(redis_url, DEMO_NAMESPACE)
        # --- Worker with beat --------------------------------------------------------------
        VAR.mkdir(parents=True, exist_ok=True)
        children.start(
            "worker",
            [
                str(Path(sys.executable).with_name("celery")),
                "-A", "worker.main", "worker", "--beat",
                "--schedule", str(VAR / "celerybeat-schedule"),
                "--loglevel", "INFO", "--concurrency", "2", "--hostname", "standalone@%h",
            ],
            env,
        )  # fmt: skip
        print(f"worker     celery worker --beat (logs in {VAR / 'logs'})")
        # --- Ingestion service (serves /metrics too) and Flower -----------------------------
        ingest_url = f"http://127.0.0.1:{ingest_port}"
        children.python("ingest", ["-m", "ingest", "--host", "127.0.0.1", "--port", str(ingest_port)], env)
        children.python("flower", ["-m", "worker.ops.flower"], env)
        flower_url = f"http://127.0.0.1:{flower_port}/"
        metrics_url = f"{ingest_url}/metrics"
        admin = EmulatorAdmin(settings.api_base_url) if settings.uses_emulator else None
        if admin is not None:
            _wait(lambda: _healthy(admin), 20, "the emulator")
        _wait(lambda: _answers(f"{ingest_url}/readyz"), 30, "the ingestion service")
        print(f"ingest     {ingest_url}/  (/twilio/voice, /zadarma/demo, /mango/demo/events/summary, /v1/calls)")
        print(f"metrics    {metrics_url}")
        print(f"flower     {flower_url}  {flower_auth}")
        print(f"console    {ingest_url}/console/  {console_auth}")
        for what, token_file in (("admin", admin_token_file), ("status", status_token_file)):
            where = f"token in {token_file}" if token_file else f"token from CALLTRACK_{what.upper()}_API_TOKEN"
            path = "/admin/v1/" if what == "admin" else "/v1/"
            print(f"{what:<10} {ingest_url}{path}  (Authorization: Bearer <{where}>)")
        demo_file = write_demo_file(
            VAR,
            {
                "redis_url": redis_url,
                "namespace": settings.namespace,
                "emulator_url": settings.api_base_url if settings.uses_emulator else None,
                "ingest_url": ingest_url,
                "console_url": f"{ingest_url}/console/",
                "console_user": settings.console_user,
                "oauth_client_id": env.get("CALLTRACK_OAUTH_CLIENT_ID"),
                # Only the files this run generated (an exported secret stays where it was exported).
                "files": {
                    name: str(ROOT / f)
                    for name, f in (
                        ("console_password", None if base.console_password else "var/standalone/console-password"),
                        ("admin_token", admin_token_file),
                        ("status_token", status_token_file),
                        ("oauth_client_secret", oauth_secret_file),
                    )
                    if f
                },
            },
        )
        print(
            f"ctl        ./scripts/ctl status  (from another terminal: finds this demo through "
            f"{demo_file.relative_to(ROOT)}; or export CALLTRACK_REDIS_URL={redis_url} "
            f"CALLTRACK_NAMESPACE={settings.namespace})"
        )
        site_url = None
        if admin is not None:
            site_port = free_port()
            site_url = f"http://127.0.0.1:{site_port}/"
            children.python(
                "site",
                ["-m", "standalone.site", "--port", str(site_port), "--ingest", ingest_url,
                 "--emulator", settings.api_base_url],
                env,
            )  # fmt: skip
            print(f"site       {site_url}  (a demo shop: the site tag shows a pool number; a button simulates a call)")
        # --- Sample calls, through the ingestion service -------------------------------------
        runtime = Runtime(settings)
        build_intake(runtime).routing.add(demo_routes())
        feeder = Feeder(ingest_url, settings.zadarma_timezone)
        fed = feeder.send(0, args.calls)
        sent = fed.accepted
        print(
            f"providers  {fed.accepted} calls stored by the ingestion service (Twilio, Mango, generic NDJSON, "
            f"and Zadarma's through the number pool: Zadarma signs no visitor id), {fed.held} held, "
            f"{fed.refused} refused"
        )
        # --- A visitor of the demo site, and the call that follows its visit ----------------
        visit = visit_and_call(ingest_url, f"{int(time.time())}{os.getpid() % 1000:03d}")
        sent += 1
        print(f"visitor    ClientId {visit.client_id} was shown {visit.number}; a call to it was made")
        started = time.monotonic()
        next_feed = started + 20
        done_once = False
        feeds = 0
        last_line = ""
        tty = sys.stdout.isatty()
        while not stopping:
            children.check()
            if admin is not None:
                line, all_done = _progress(admin, sent)
                # The pipeline's own records must agree (what ctl, the console and the status API show):
                # no call pending, no batch still waiting for its final status.
                all_done = all_done and _pipeline_settled(runtime)
                if tty:
                    print(f"\r{line}", end="", flush=True)
                elif line != last_line:
                    print(line.rstrip(), flush=True)
                last_line = line
                if all_done and not done_once:
                    done_once = True
                    found = where_is(admin, visit.client_id)
                    if found is not None:
                        print(
                            f"\nattribution: the call to {visit.number} reached Metrica with ClientId "
                            f"{found['row']['ClientId']} (upload {found['upload_id']}, {found['status']})",
                            flush=True,
                        )
                    print(
                        f"\nall {sent} calls are at Metrica, every upload PROCESSED, in the pipeline's own records too "
                        f"({time.monotonic() - started:.0f} s). Emulator page: {settings.api_base_url}/\n"
                        f"Flower: {flower_url}  metrics: {metrics_url}  ingestion: {ingest_url}/",
                        flush=True,
                    )
                    if args.once:
                        return 0
                    print("feeding a few calls every 20 s; Ctrl-C stops everything")
            if args.once and time.monotonic() - started > args.timeout:
                print(f"\nnot every upload reached PROCESSED within {args.timeout:.0f} s", file=sys.stderr)
                return 1
            if not args.once and time.monotonic() > next_feed:
                fed = feeder.send(args.calls + feeds * 30, 30)
                feeds += 1
                sent += fed.accepted
                next_feed = time.monotonic() + 20
            time.sleep(1)
        print("\nstopping ...")
        return 0
    finally:
        remove_demo_file(VAR)
        children.stop_all()
        if redis_server is not None:
            redis_server.stop()
        print("stopped: nothing left running")


def _clear_namespace(redis_url: str, namespace: str) -> None:
    client = Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()


def _port(preferred: int) -> int:
    """``preferred`` when nothing listens there, else a free port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _healthy(admin: EmulatorAdmin) -> bool:
    try:
        return admin.health()
    except Exception:
        return False


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start in {timeout:.0f} s")
        time.sleep(0.2)


def _pipeline_settled(runtime: Runtime) -> bool:
    counters = overview.status(runtime)
    return bool(counters) and all(c.pending_calls == 0 and c.open_batches == 0 for c in counters)


def _progress(admin: EmulatorAdmin, sent: int) -> tuple[str, bool]:
    uploads = admin.uploads(with_rows=False)
    statuses = Counter(u["status"] for u in uploads)
    rows = sum(int(u.get("line_quantity") or 0) for u in uploads)
    order = ("UPLOADED", "EXPORTED", "MATCHED", "PROCESSED", "LINKAGE_FAILURE")
    shown = "  ".join(f"{s} {statuses[s]}" for s in order if statuses[s])
    line = f"metrica    {rows}/{sent} calls in {len(uploads)} uploads   {shown}".ljust(110)
    done = rows >= sent and bool(uploads) and set(statuses) <= {"PROCESSED", "LINKAGE_FAILURE"}
    return line, done


if __name__ == "__main__":
    sys.exit(main())
