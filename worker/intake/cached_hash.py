"""Fields of one Redis hash read through a short per-process cache: the routing table and the counter
owners both fetch every field a batch misses with one ``HMGET``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar, cast

from redis import Redis

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
MAX_CACHED = 100_000  # beyond, the cache starts again (a bound, not an eviction policy)


class CachedHash(Generic[K, V]):
    """``decode(field, value or None)`` of each field of ``key``, each kept ``ttl`` seconds (0: never)."""

    def __init__(
        self,
        redis: Redis,
        key: str,
        decode: Callable[[K, str | None], V],
        *,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._key = key
        self._decode = decode
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[K, tuple[V, float]] = {}
        self._lock = threading.Lock()

    def get(self, fields: Iterable[K | None]) -> dict[K, V]:
        """The value of each distinct field (None fields skipped), with at most one HMGET."""
        now = self._clock()
        found: dict[K, V] = {}
        asked: set[K] = set()
        missing: list[K] = []
        for name in fields:
            if name is None or name in asked:
                continue
            asked.add(name)
            cached = self._cache.get(name)
            if cached is not None and cached[1] > now:
                found[name] = cached[0]
            else:
                missing.append(name)
        if missing:
            values = cast(list[str | None], self._redis.hmget(self._key, [str(name) for name in missing]))
            expires = now + self._ttl
            with self._lock:
                if len(self._cache) > MAX_CACHED:
                    self._cache.clear()
                for name, value in zip(missing, values, strict=True):
                    found[name] = self._decode(name, value)
                    if self._ttl > 0:
                        self._cache[name] = (found[name], expires)
        return found

    def cached(self, fields: Iterable[K | None]) -> dict[K, V] | None:
        """What :meth:`get` of ``fields`` answers, from the cache alone; None when any field is missing
        or expired there (then :meth:`get` needs its round trip)."""
        now = self._clock()
        found: dict[K, V] = {}
        for name in fields:
            if name is not None and name not in found:
                hit = self._cache.get(name)
                if hit is None or hit[1] <= now:
                    return None
                found[name] = hit[0]
        return found

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
