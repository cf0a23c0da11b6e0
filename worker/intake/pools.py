"""Dynamic number pools: each visitor session is shown a number, and a call to that number is
credited to the session that held it when the call started.

The routing table decides which numbers are dynamic; :class:`NumberPools` keeps each counter's pool
in a sorted set scored by lease end (``lua/lease.lua``): a session gets a free number, least recently
used first (a short first lease, the full one once it returns; live leases per client address and
per /24 or /64 capped), keeps it while it returns within the lease, and every lease is logged with its start,
end and the session's identifiers and landing URL for ``pool_history_days``, so a CDR imported days
late is still attributed to the visitor who held the number at the time of the call. When a pool has
no free number the counter's fallback number is answered and the event counted.

A lease record is bounded in bytes (issue 22: a 2 KB URL and a 250-character UserId were kept for
the whole history, ~165 MB per 4-number pool at the per-/64 cap): ClientId and Yclid are Metrica's
unsigned 64-bit numbers (at most 20 digits), UserId at most :data:`MAX_SESSION_USER_ID` characters
(longer ones are refused, 422 naming the field), and the landing URL is kept without its fragment,
without its query when the whole would pass :data:`MAX_SESSION_URL_BYTES`, and cut there on a
character boundary. So a record is at most :data:`MAX_LEASE_RECORD_BYTES`. Records written before
are read as they are.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

import orjson
import structlog
from pydantic import Field, field_validator

from worker.dataplane.steps import Commands, Scripts, Steps, run_sync
from worker.model.fields import DigitsId, OneLine, UrlText, Visitor
from worker.store import time_ms

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)

MAX_ID_DIGITS = 20  # ClientId and Yclid are unsigned 64-bit numbers at Metrica
MAX_SESSION_USER_ID = 128  # characters: a SHA-512 in hex fits
MAX_SESSION_URL_BYTES = 256
# The worst case of Session.record(): its keys and quotes, the ids, each UserId character 4 bytes
# of UTF-8 and each URL byte escaped to 2 (orjson escapes only '"', '\\' and C0 controls, which
# the model refuses).
MAX_SESSION_JSON_BYTES = 48 + 2 * MAX_ID_DIGITS + 4 * MAX_SESSION_USER_ID + 2 * MAX_SESSION_URL_BYTES
# "number|start ms|end ms|session JSON": an E.164 number (16), two 13-digit times, three separators.
MAX_LEASE_RECORD_BYTES = 16 + 2 * 13 + 3 + MAX_SESSION_JSON_BYTES


def landing_url(url: str | None) -> str | None:
    """The landing URL as a lease keeps it: no fragment; no query when the whole is over
    :data:`MAX_SESSION_URL_BYTES`; then cut at that many bytes on a character boundary."""
    if not url:
        return None
    parts = urlsplit(url)
    kept = urlunsplit(parts._replace(fragment=""))
    if len(kept.encode()) > MAX_SESSION_URL_BYTES:
        kept = urlunsplit(parts._replace(query="", fragment=""))
    return kept.encode()[:MAX_SESSION_URL_BYTES].decode("utf-8", "ignore")


class Session(Visitor):
    """What the site's script knows of a visitor: Metrica's ClientId, and UserId, Yclid, landing URL."""

    counter_id: int = Field(gt=0, le=2**63 - 1, alias="counter")
    client_id: DigitsId = Field(default=None, alias="ClientId", max_length=MAX_ID_DIGITS)
    user_id: OneLine = Field(default=None, alias="UserId", max_length=MAX_SESSION_USER_ID)
    yclid: DigitsId = Field(default=None, alias="Yclid", max_length=MAX_ID_DIGITS)
    url: UrlText = Field(default=None, alias="URL")

    @field_validator("url")
    @classmethod
    def _landing(cls, value: str | None) -> str | None:
        return landing_url(value)

    @property
    def key(self) -> str:
        """Who the session is: its ClientId, else UserId, else Yclid (hashed: keys carry no ids)."""
        ident = f"c:{self.client_id}" if self.client_id else f"u:{self.user_id}" if self.user_id else f"y:{self.yclid}"
        return hashlib.blake2b(ident.encode(), digest_size=10).hexdigest()

    def record(self) -> bytes:
        """The session's part of its lease record: at most :data:`MAX_SESSION_JSON_BYTES`."""
        data = {"ClientId": self.client_id, "UserId": self.user_id, "Yclid": self.yclid, "URL": self.url}
        record = orjson.dumps({k: v for k, v in data.items() if v})
        if len(record) > MAX_SESSION_JSON_BYTES:  # the fields' rules make this impossible; never store more
            raise ValueError(f"a session record of {len(record)} bytes is over {MAX_SESSION_JSON_BYTES}")
        return record


def _digest(text: str) -> str:
    """Client addresses are hashed before they name a key (keys carry no personal data)."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class RateLimited(Exception):
    """Too many session requests this second from one client IP (``who='client'``) or for a counter."""

    def __init__(self, who: str) -> None:
        super().__init__(f"too many requests for this {who}; retry in a second")
        self.who = who


@dataclass(frozen=True, slots=True)
class Lease:
    """The answer to the site: the number to show, until when, and whether it is the fallback."""

    number: str | None
    expires_at_ms: int
    fallback: bool


@dataclass(frozen=True, slots=True)
class Attribution:
    """The session that held a number when a call started."""

    ids: dict[str, str]
    url: str | None


class NumberPools:
    """Leases and lease history of every counter's dynamic numbers."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        s = rt.settings
        self._lease_ms = int(s.pool_lease_seconds * 1000)
        self._history_ms = int(s.pool_history_days * 86_400_000)
        self._grace_ms = int(s.pool_grace_seconds * 1000)
        self._first_ms = int(min(s.pool_first_lease_seconds, s.pool_lease_seconds) * 1000)

    def lease(self, session: Session, client: str = "", network: str = "") -> Lease:
        """A number for this session: the one it holds (lease extended), a free one, or the fallback.

        ``client`` is the client's address, ``network`` its /24 or /64. Raises ``RateLimited`` when the
        address (across every counter) or the counter is over its per-second limit. A counter without
        a pool gets its fallback with nothing written to Redis.
        """
        return run_sync(self._rt.redis, self.lease_steps(session, client, network))[0]

    def lease_steps(self, session: Session, client: str = "", network: str = "") -> Steps[tuple[Lease, int]]:
        """:meth:`lease` as steps (worker/dataplane/steps.py), with Redis's clock (``TIME``, in ms) read in
        the lease's round trip: two round trips, the rate count and then the lease."""
        k, counter = self._rt.keys, session.counter_id
        s = self._rt.settings
        second = int(time.time())
        address = _digest(client)
        yield from self._limit(address, second)
        lease_call = (
            self._rt.scripts.lease,
            [
                k.pool(counter),
                k.pool_sessions(counter),
                k.pool_holders(counter),
                k.pool_log(counter),
                k.pool_seq(counter),
                k.pool_exhausted(k.shard_of(counter)),
                k.rate(counter, "ctr", str(counter), second),
                k.pool_live(counter, "a", address),
                k.pool_live(counter, "n", _digest(network or client)),
            ],
            [
                session.key,
                session.record(),
                self._lease_ms,
                self._history_ms,
                counter,
                k.prefix(k.shard_of(counter)),
                s.session_rate_per_counter,
                self._first_ms,
                s.pool_leases_per_address,
                s.pool_leases_per_network,
            ],
        )
        replies = yield Scripts([lease_call], then=[["TIME"]])
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        (number, ends, how), now_ms = replies[0], time_ms(replies[1])
        if how == "rate_counter":
            self._refused("rate_counter")
            raise RateLimited("counter")
        if how in ("exhausted", "address_limit", "network_limit", "nopool"):
            if how == "exhausted":
                log.warning("number_pool_exhausted", counter_id=counter)
            self._refused(how)
            fallback = s.pool_fallback_numbers.get(counter)
            return Lease(fallback, 0, True), now_ms
        return Lease(str(number), int(ends), False), now_ms

    def _limit(self, address: str, second: int) -> Steps[None]:
        """The per-address rate across every counter: ``RateLimited('client')`` beyond it."""
        rate_key = self._rt.keys.session_rate(address, second)
        counted = yield Commands([("INCR", rate_key), ("EXPIRE", rate_key, 2)])
        if int(counted[0]) > self._rt.settings.session_rate_per_ip:
            self._refused("rate_address")
            raise RateLimited("client")

    def release(self, session: Session, client: str = "") -> int:
        """The visitor left: the session's lease ends ``pool_first_lease_seconds`` from now at the latest
        (a visitor may still dial the number just seen; a next page of the site asks again and keeps it).
        The lease's new end in ms, or 0 when the session holds no live number (nothing is written).
        Counted in the per-address rate as a lease is (``RateLimited``)."""
        run_sync(self._rt.redis, self._limit(_digest(client), int(time.time())))
        k, counter = self._rt.keys, session.counter_id
        keys = [k.pool(counter), k.pool_sessions(counter), k.pool_holders(counter), k.pool_log(counter)]
        return int(self._rt.scripts.release(keys=keys, args=[session.key, self._first_ms]))

    def _refused(self, reason: str) -> None:
        """Count a session answered without a pool number (``pool_fallbacks`` by reason)."""
        self._rt.metrics.incr("pool_fallbacks", reason)

    def attribute(self, lookups: Sequence[tuple[int, str, int]]) -> list[Attribution | None]:
        """For each (counter, number, call start in Unix seconds), the session holding it then."""
        if not lookups:
            return []
        k = self._rt.keys
        pipe = self._rt.redis.pipeline(transaction=False)
        for counter, number, started in lookups:
            # Call times have whole seconds: a lease that began within the call's second counts.
            pipe.zrevrangebyscore(k.pool_history(counter, number), started * 1000 + 999, "-inf", start=0, num=1)
        lease_ids = cast(list[list[str]], pipe.execute())
        pipe = self._rt.redis.pipeline(transaction=False)
        asked: list[int] = []
        for i, ((counter, _, _), ids) in enumerate(zip(lookups, lease_ids, strict=True)):
            if ids:
                pipe.hget(k.pool_log(counter), ids[0])
                asked.append(i)
        records = cast(list[str | None], pipe.execute()) if asked else []
        result: list[Attribution | None] = [None] * len(lookups)
        for i, record in zip(asked, records, strict=True):
            if record is None:
                continue
            _, _, end, data = record.split("|", 3)
            if lookups[i][2] * 1000 > int(end) + self._grace_ms:
                continue  # the lease had ended and nobody held the number
            raw: dict[str, Any] = orjson.loads(data)
            url = raw.pop("URL", None)
            result[i] = Attribution({c: str(v) for c, v in raw.items() if v}, url)
        return result

    def exhausted(self) -> dict[int, int]:
        """Counter -> how often its pool had no free number."""
        counts: dict[int, int] = {}
        for shard in range(self._rt.keys.shards):
            raw = cast(dict[str, str], self._rt.redis.hgetall(self._rt.keys.pool_exhausted(shard)))
            counts.update({int(c): int(n) for c, n in raw.items()})
        return counts
