"""Heartbeats of workers and beats, and the probes that read them: ``python -m worker.ops.health``.

Every worker (main process) and every beat runs a :class:`Heartbeat` thread that, each
``heartbeat_interval`` seconds, touches a local file and writes ``{at, host, pid, every}`` under its node
name in the ``Keys.heartbeats`` hash. A beat beats only while its scheduler sends due tasks (or, a
standby, ticks): a beat whose schedule sends nothing goes stale like a dead one. Each write also
removes the entries of nodes silent for ``FORGET`` of their intervals (a SIGKILLed process never
removes its own) and keeps the hash expiring, so the heartbeats of a fleet that is gone expire too.
Two probes read them (exit 0 when healthy, 1 when not):

* ``liveness``: the local file of this role is fresh (at most 3 intervals old): the process runs and
  its loop turns. It does not ask Redis, so a Redis outage never gets healthy workers restarted.
* ``readiness``: Redis answers and holds a fresh heartbeat of this role from this host: the process
  is connected and working.

Docker healthchecks run ``python -m worker.ops.health readiness --role worker`` (see docker-compose.yml).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import click
import orjson
import structlog
from redis.exceptions import RedisClusterException, RedisError

from config.settings import Settings, load_settings
from worker.dataplane.keys import Keys
from worker.ops.scrape import heartbeats
from worker.store import connect_data

log = structlog.get_logger(__name__)
MISSED = 3  # a heartbeat older than this many intervals is stale
FORGET = 12  # ... and one older than this many is removed (its process died without saying so)
LONGEST_INTERVAL = 60.0  # the largest heartbeat_interval allowed: the hash outlives any live node's


def heartbeat_file(settings: Settings, role: str) -> Path:
    folder = Path(settings.heartbeat_dir or tempfile.gettempdir())
    return folder / f"calltrack-{settings.namespace}-{role}.alive"


class Heartbeat:
    """A daemon thread that says "alive" for one process until stopped."""

    def __init__(self, settings: Settings, role: str, node: str, alive: Callable[[], bool] | None = None) -> None:
        self.settings = settings
        self.role = role
        self.node = node
        self.alive = alive  # when given, the heartbeat is written only while it answers True
        self.field = f"{role}:{node}"
        self.keys = Keys(settings.namespace, settings.shards)
        self.file = heartbeat_file(settings, role)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat_once(self) -> bool:
        """Write the heartbeat (unless ``alive`` says no) and forget dead nodes'; True when written."""
        if self.alive is not None and not self.alive():
            log.warning("heartbeat_withheld", role=self.role, reason="no due task sent lately")
            return False
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self.file.write_text(str(os.getpid()))
        interval = self.settings.heartbeat_interval
        now_ms = int(time.time() * 1000)
        value = orjson.dumps({"at": now_ms, "host": socket.gethostname(), "pid": os.getpid(), "every": interval})
        client = connect_data(self.settings)
        try:
            with client.pipeline(transaction=False) as pipe:
                pipe.hset(self.keys.heartbeats, self.field, value)
                pipe.expire(self.keys.heartbeats, int(FORGET * LONGEST_INTERVAL))
                pipe.hgetall(self.keys.heartbeats)
                entries = cast(dict[str, str], pipe.execute()[-1])
            dead = [field for field, raw in entries.items() if _forgotten(raw, now_ms, interval)]
            if dead:
                client.hdel(self.keys.heartbeats, *dead)
                log.info("heartbeats_forgotten", nodes=dead)
        finally:
            client.close()
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat_once()
            except (RedisError, RedisClusterException, OSError) as error:  # a cluster with no node up: not a RedisError
                log.warning("heartbeat_failed", role=self.role, error=type(error).__name__)
            self._stop.wait(self.settings.heartbeat_interval)

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name=f"calltrack-heartbeat-{self.role}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and remove this process's heartbeat (a clean shutdown is not a death)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(RedisError):
            client = connect_data(self.settings)
            try:
                client.hdel(self.keys.heartbeats, self.field)
            finally:
                client.close()
        with contextlib.suppress(OSError):
            self.file.unlink(missing_ok=True)


def _forgotten(raw: str, now_ms: int, default_interval: float) -> bool:
    """An entry silent for ``FORGET`` of its own intervals (the writer's, if it did not say), or unreadable."""
    try:
        data = orjson.loads(raw)
        every = float(data.get("every") or default_interval)
        return now_ms - int(data["at"]) > FORGET * every * 1000
    except (ValueError, KeyError, TypeError, AttributeError):
        return True


def liveness(settings: Settings, role: str) -> tuple[bool, str]:
    path = heartbeat_file(settings, role)
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False, f"no heartbeat file {path}"
    limit = settings.heartbeat_interval * MISSED
    if age > limit:
        return False, f"{role} heartbeat file is {age:.0f} s old (limit {limit:.0f} s)"
    return True, f"{role} alive ({age:.1f} s ago)"


def readiness(settings: Settings, role: str, host: str | None = None) -> tuple[bool, str]:
    keys = Keys(settings.namespace, settings.shards)
    host = host or socket.gethostname()
    client = connect_data(settings)
    try:
        client.ping()
        beats = [b for b in heartbeats(client, keys) if b.role == role and b.host == host]
    except RedisError as error:
        return False, f"Redis does not answer: {type(error).__name__}"
    finally:
        client.close()
    limit = settings.heartbeat_interval * MISSED
    fresh = [b for b in beats if b.age <= limit]
    if not fresh:
        return False, f"no fresh {role} heartbeat from {host} in Redis"
    return True, f"{role} ready: {', '.join(b.node for b in fresh)}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("probe", type=click.Choice(["liveness", "readiness"]))
@click.option("--role", type=click.Choice(["worker", "beat"]), default="worker", show_default=True)
@click.option("--host", help="Host whose heartbeat readiness looks for (default: this host).")
def main(probe: str, role: str, host: str | None) -> None:
    """Exit 0 when this host's worker (or beat) is alive / ready, 1 when not; one line says why."""
    settings = load_settings()
    ok, why = liveness(settings, role) if probe == "liveness" else readiness(settings, role, host)
    click.echo(why, err=not ok)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
