"""Redis connections, the per-shard set-up every writer and reader relies on, and Redis memory."""

from __future__ import annotations

import secrets
import string
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, cast

import structlog
from redis import Redis, RedisCluster
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from config.sections.store import StoreSettings
from worker.dataplane.keys import Keys
from worker.errors import StoreConfigError
from worker.format import ensure_format

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

log = structlog.get_logger(__name__)
_EPOCH_ALPHABET = string.ascii_lowercase + string.digits


_OPTIONS: dict[str, object] = {
    "decode_responses": True,
    "socket_connect_timeout": 5,
    "socket_timeout": 30,
    "health_check_interval": 30,
}


def connect_async(url: str) -> AsyncRedis:
    """:func:`connect`'s client for an event loop (``redis.asyncio``; a single Redis: the same options).
    Over TCP it packs commands with hiredis, as the synchronous client does (``rediss://`` and
    ``unix://`` take redis-py's own connection classes). Imported here, not above: only the ingestion
    service uses it (issue 25's short start-up of ``ctl``)."""
    from redis.asyncio import Redis as AsyncRedis  # noqa: PLC0415
    from redis.asyncio.retry import Retry as AsyncRetry  # noqa: PLC0415
    from redis.utils import HIREDIS_AVAILABLE  # noqa: PLC0415

    retry = AsyncRetry(ExponentialBackoff(cap=2.0, base=0.1), retries=3)
    packed = {"connection_class": _hiredis_packed()} if HIREDIS_AVAILABLE else {}
    return AsyncRedis.from_url(url, **_OPTIONS, **packed, retry=retry)  # type: ignore[arg-type]


@cache
def _hiredis_packed() -> type:
    """``redis.asyncio`` packs commands in Python (a fifth of a one-call request's client time); the
    synchronous client packs them with hiredis when it is installed: the same bytes, in C."""
    from redis.asyncio.connection import Connection  # noqa: PLC0415
    from redis.connection import HiredisRespSerializer  # noqa: PLC0415

    class HiredisPacked(Connection):
        def pack_command(self, *args: Any) -> list[bytes]:
            return HiredisRespSerializer().pack(*args)  # type: ignore[no-any-return]

    return HiredisPacked


def connect(url: str, *, cluster: bool = False) -> Redis:
    """A client returning ``str``, with explicit timeouts and a short retry on dropped connections.

    ``cluster``: redis-py's ``RedisCluster`` started from the node ``url`` names (it learns the others
    with ``CLUSTER SLOTS``, follows ``MOVED``/``ASK`` and refreshes its map after a failover). It
    answers the same commands for single-slot keys, so the domain is typed against ``Redis``; every
    transaction and script of the project touches one slot (see ARCHITECTURE, "Redis Cluster").
    """
    options: dict[str, object] = {**_OPTIONS, "retry": Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=3)}
    if cluster:
        return cast(Redis, RedisCluster.from_url(url, **options))
    client: Redis = Redis.from_url(url, **options)
    return client


def connect_data(settings: StoreSettings) -> Redis:
    """The data plane's client: a single Redis, or the cluster when ``CALLTRACK_REDIS_CLUSTER`` says so."""
    return connect(settings.redis_url, cluster=settings.redis_cluster)


def is_cluster(redis: Redis) -> bool:
    return isinstance(redis, RedisCluster)


def cluster_nodes_health(redis: Redis) -> list[tuple[str, bool, str]]:
    """(node, ok, line) of every node the cluster client knows: ``CLUSTER INFO`` asked of each."""
    found = []
    for node in cast(RedisCluster, redis).get_nodes():  # type: ignore[no-untyped-call]
        try:
            ok, line = cluster_health(cast(Redis, node.redis_connection))
        except Exception as error:  # a node down is a finding, not a crash of the check
            ok, line = False, f"{type(error).__name__}: {error}"
        found.append((f"{node.name} ({node.server_type})", ok, line))
    return found


def cluster_health(client: Redis) -> tuple[bool, str]:
    """(ok, one line): ``CLUSTER INFO`` says ``cluster_state:ok`` and all 16384 slots are assigned and ok."""
    info: object = client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
    if isinstance(info, bytes | str):
        text = info.decode() if isinstance(info, bytes) else info
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    else:
        fields = {str(k): str(v) for k, v in cast(dict[object, object], info).items()}
    state = fields.get("cluster_state", "?").strip()
    assigned = int(fields.get("cluster_slots_assigned", 0))
    good = int(fields.get("cluster_slots_ok", 0))
    line = (
        f"cluster_state {state}, {assigned}/16384 slots assigned, {good} ok, {fields.get('cluster_size', '?')} masters"
    )
    return state == "ok" and assigned == 16384 and good == 16384, line


def redis_now_ms(redis: Redis) -> int:
    """Redis's clock (``TIME``) in ms: every time the fleet compares comes from this one clock."""
    return time_ms(redis.time())


def time_ms(reply: Sequence[Any]) -> int:
    """A ``TIME`` reply (seconds, microseconds) in ms."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


class Durability:
    """What "stored" means before the fleet acts on a write: ``none`` (Redis's memory, the AOF policy
    decides the rest), ``replica`` (``WAIT``: that many replicas hold it) or ``aof`` (``WAITAOF 1 0``:
    fsynced to the local AOF).

    ``commands`` go after the writes on the same connection (``worker.dataplane.scripts.run_many``'s ``then``);
    ``shortfall`` reads their replies. The producer waits before it reports calls accepted; the uploader
    waits after it marks a batch UPLOADING and before it posts the file, so no failover or lost
    second makes a posted file look unposted (it would be posted twice) or a sealed batch look open
    (its calls would be sealed again into a batch of other content).
    """

    def __init__(self, mode: str = "none", replicas: int = 1, timeout: float = 1.0) -> None:
        self.mode = mode
        self.wanted = replicas if mode == "replica" else 1
        timeout_ms = max(1, int(timeout * 1000))
        self.commands: list[list[Any]] = []
        if mode == "replica":
            self.commands = [["WAIT", replicas, timeout_ms]]
        elif mode == "aof":
            self.commands = [["WAITAOF", 1, 0, timeout_ms]]

    def shortfall(self, acks: Sequence[Any]) -> str | None:
        """None when the replies of ``commands`` confirm the writes; else why not, in one line."""
        if not self.commands:
            return None
        (ack,) = acks
        if isinstance(ack, Exception):
            return f"Redis did not confirm durability: {ack}"
        got = int(ack) if self.mode == "replica" else int(ack[0])
        if got < self.wanted:
            where = "replicas" if self.mode == "replica" else "local AOF fsyncs"
            return f"only {got} of {self.wanted} {where} confirmed the writes in time"
        return None


def check_durability(redis: Redis, mode: str) -> None:
    """Refuse a producer durability this Redis cannot give (one line naming the variable)."""
    if mode != "aof":
        return
    for info in _infos(redis, "server"):
        version = str(info.get("redis_version", "0"))
        major, minor = (int(part) for part in [*version.split("."), "0", "0"][:2])
        if (major, minor) < (7, 2):
            raise StoreConfigError(
                f"CALLTRACK_PRODUCER_DURABILITY=aof needs WAITAOF (Redis 7.2 or later) but this Redis is {version}: "
                "upgrade Redis, or use replica (WAIT) or none"
            )


def ensure_shard(redis: Redis, keys: Keys, shard: int) -> None:
    """Create the shard's epoch (and dedup start) if they do not exist yet.

    The epoch is a random tag in every batch id of the shard: if Redis ever loses its data, new batch
    ids cannot collide with uploads Metrica already holds. The stream needs no set-up: drain reads it
    from its head and trims what it took (no consumer group; a group an older version made is unused).
    """
    epoch = "".join(secrets.choice(_EPOCH_ALPHABET) for _ in range(6))
    fresh = redis.set(keys.epoch(shard), epoch, nx=True)
    # Bucketed dedup marks (issue 18): a shard that existed before may hold one-key marks
    # (``seen:``/``ref:``), which drain and call refs read for one dedup window from now.
    redis.set(keys.dedup_since(shard), 0 if fresh else int(time.time() * 1000), nx=True)


def pin_shards(redis: Redis, keys: Keys, alive_ms: int = 60_000) -> None:
    """Check the data format and the shard count pinned at the deployment's first start (``worker.format``).

    A process with another ``CALLTRACK_SHARDS`` would write to shards no worker drains (or drain
    only some), and ``/metrics`` would never show them. Raises ``ShardCountError`` or, for a format this
    release does not know, ``FormatVersionError`` (one line each); migrates an older format it knows once
    no process of the older release was heard within ``alive_ms``.
    """
    ensure_format(redis, keys, lambda line: log.warning("data_format", step=line), alive_ms=alive_ms)


def ensure_all_shards(redis: Redis, keys: Keys) -> None:
    for shard in range(keys.shards):
        ensure_shard(redis, keys, shard)


@dataclass(frozen=True, slots=True)
class Memory:
    """Redis's ``used_memory`` and ``maxmemory`` in bytes (``maxmemory`` 0: no limit)."""

    used: int
    limit: int

    def share(self) -> float:
        """Used memory as a share of ``maxmemory``; 0 without a limit."""
        return self.used / self.limit if self.limit > 0 else 0.0


def _infos(redis: Redis, section: str) -> list[dict[str, object]]:
    """``INFO section`` of a single Redis, or of every master of a cluster."""
    if isinstance(redis, RedisCluster):
        per_node = cast(dict[str, dict[str, object]], redis.info(section, target_nodes=RedisCluster.PRIMARIES))
        return list(per_node.values())
    return [cast(dict[str, object], redis.info(section))]


def memory(redis: Redis) -> Memory:
    """One ``INFO memory`` round trip; on a cluster, the fullest master's (the one to refuse writes first)."""
    readings = [
        Memory(int(cast(int, info.get("used_memory", 0))), int(cast(int, info.get("maxmemory", 0))))
        for info in _infos(redis, "memory")
    ]
    return max(readings, key=lambda m: (m.share(), m.used))


class MemoryWatermark:
    """Is Redis above the producers' soft watermark? ``INFO memory`` read at most once per ``ttl``.

    Producers stop below ``maxmemory`` so that everything that frees memory (the upload lock, the
    upload and status scripts, Celery's messages) always has room.
    """

    def __init__(self, redis: Redis, share: float, ttl: float) -> None:
        self._redis, self._share, self._ttl = redis, share, ttl
        self._lock = threading.Lock()
        self._checked = -ttl - 1.0
        self._last = Memory(0, 0)

    def current(self) -> Memory:
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self._ttl:
                self._last = memory(self._redis)
                self._checked = now
            return self._last

    def stale(self) -> bool:
        """Whether :meth:`above` would ask Redis now (else it answers from the last reading)."""
        return self._share < 1.0 and time.monotonic() - self._checked >= self._ttl

    def above(self) -> Memory | None:
        """The memory reading when it is at or above the watermark, else None."""
        if self._share >= 1.0:
            return None
        reading = self.current()
        return reading if reading.limit > 0 and reading.used >= self._share * reading.limit else None
