"""A local Redis Cluster of 3 masters and 3 replicas from the ``redis-server`` binary (tests, benchmark).

``python -m standalone.cluster start [--dir D] [--port P]`` starts six daemonised nodes on ports P..P+5
(AOF on, ``--cluster-enabled yes``), joins them with ``redis-cli --cluster create ... --cluster-replicas 1
--cluster-yes``, waits until every node says ``cluster_state:ok`` and prints the URL of the first node;
``stop`` ends the nodes it started (their pids are in D). ``scripts/redis-cluster`` wraps both.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from standalone.redis_server import RedisServer
from worker.store import cluster_health

MASTERS = 3
NODE_TIMEOUT_MS = 2000  # a dead master's replica takes over within a few seconds


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_ports(count: int) -> list[int]:
    """Ports a cluster node can take: at most 55535 (its bus listens 10000 higher), both free."""
    rng = random.Random()  # noqa: S311 - picking free ports, not a secret
    found: list[int] = []
    while len(found) < count:
        port = rng.randrange(20000, 45000)
        if port not in found and _port_free(port) and _port_free(port + 10000):
            found.append(port)
    return found


class LocalCluster:
    """Six ``redis-server`` children (3 masters, 3 replicas) in one temporary directory."""

    def __init__(self, *, base_dir: str | Path | None = None, ports: list[int] | None = None) -> None:
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="calltrack-cluster-")).resolve()
        ports = ports or free_cluster_ports(MASTERS * 2)
        self.nodes = [
            RedisServer(
                port=port,
                data_dir=self.base_dir / str(port),
                extra=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    "--cluster-replica-validity-factor", "0",
                ),
            )
            for port in ports
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, *, daemonize: bool = False, timeout: float = 30.0) -> LocalCluster:
        for node in self.nodes:
            if daemonize:
                subprocess.run(node.args(daemonize=True), check=True, stdout=subprocess.DEVNULL)  # noqa: S603
                node._wait(10)
            else:
                node.start()
        beside = Path(self.nodes[0].binary).with_name("redis-cli")  # the same version as the servers
        cli = str(beside) if beside.exists() else shutil.which("redis-cli") or "redis-cli"
        subprocess.run(  # noqa: S603
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.wait_healthy(timeout)
        self.wait_replicas_online(timeout)
        return self

    def wait_replicas_online(self, timeout: float = 30.0) -> None:
        """Until every master has a replica that finished its sync (``WAIT 1`` answers 1 only then)."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = []
            for node in self.masters():
                with Redis(port=node.port, socket_timeout=2) as client:
                    info = client.info("replication")
                states = [str(v.get("state")) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
                if "online" not in states:
                    waiting.append(node.port)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"masters without an online replica: {waiting}")
            time.sleep(0.2)

    def wait_healthy(self, timeout: float = 30.0, *, skip: set[int] | None = None) -> None:
        """Until every live node reports ``cluster_state:ok`` with all slots covered."""
        deadline = time.monotonic() + timeout
        while True:
            lines = []
            for node in self.nodes:
                if skip and node.port in skip:
                    continue
                try:
                    with Redis(port=node.port, socket_timeout=2) as client:
                        ok, line = cluster_health(client)
                except RedisError as error:
                    ok, line = False, str(error)
                if not ok:
                    lines.append(f"{node.port}: {line}")
            if not lines:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("cluster not healthy: " + "; ".join(lines))
            time.sleep(0.2)

    def masters(self) -> list[RedisServer]:
        """The nodes that are masters now (after a failover, a former replica)."""
        found = []
        for node in self.nodes:
            with contextlib.suppress(RedisError), Redis(port=node.port, socket_timeout=2) as client:
                if client.info("replication").get("role") == "master":
                    found.append(node)
        return found

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
            pidfile = node.data_dir / "redis.pid"
            if node.process is None and pidfile.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="A local Redis Cluster: 3 masters, 3 replicas.")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", default=".cluster", help="node directories and pid files (default .cluster)")
    parser.add_argument("--port", type=int, default=7000, help="first port; the nodes take 6 from it")
    args = parser.parse_args()
    base = Path(args.dir).resolve()
    ports = [args.port + i for i in range(MASTERS * 2)]
    cluster = LocalCluster(base_dir=base, ports=ports)
    if args.action == "stop":
        cluster.stop()
        print(f"stopped the cluster in {base}")
        return
    if any((base / str(p) / "nodes.conf").exists() for p in ports):
        sys.exit(f"{base} already holds a cluster: ./scripts/redis-cluster stop --dir {args.dir}, then remove it")
    cluster.start(daemonize=True)
    print(cluster.url)


if __name__ == "__main__":
    main()
