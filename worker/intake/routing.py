"""The routing table: tracking number -> counter, static or dynamic, channel label, per-number options.

Kept in one Redis hash (``Keys.routing``), number -> JSON. Lookups go through a short in-process
cache (``routing_cache_seconds``) and fetch every missing number of a request or batch with one
``HMGET``, so routing costs at most one round trip per batch.

An entry belongs to the client account that holds its counter (worker/intake/ownership.py): a number
routed to one tenant's counter is not re-routed to another tenant's (``RouteOwnerError``, nothing
written) unless the operator passes ``across_accounts=True`` (``ctl routing add --across-accounts``).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Literal, cast

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis import Redis

from worker.dataplane.keys import Keys
from worker.intake.cached_hash import CachedHash
from worker.intake.ownership import CounterOwners
from worker.model.calls import FieldError, field_errors
from worker.model.fields import CONTROL_MESSAGE, has_control
from worker.model.inbound import normalize_number

Kind = Literal["static", "dynamic"]
CSV_COLUMNS = ("number", "counter_id", "kind", "label", "outgoing")


class RouteInput(BaseModel):
    """A routing entry as an operator writes it (CLI, CSV); checks every field."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    number: str = Field(description="Tracking number, international format.")
    counter_id: int = Field(gt=0, le=2**63 - 1)
    kind: Kind = "static"
    label: str | None = Field(default=None, max_length=255)
    outgoing: bool = False

    @field_validator("number")
    @classmethod
    def _check_number(cls, value: str) -> str:
        number = normalize_number(value)
        if number is None:
            raise ValueError("must be an international number with country code, 7 to 15 digits, as +74951234567")
        return number

    @field_validator("label")
    @classmethod
    def _check_label(cls, value: str | None) -> str | None:
        if value is not None and has_control(value):
            raise ValueError(CONTROL_MESSAGE)
        return value or None


@dataclass(frozen=True, slots=True)
class Route:
    """Where calls to one tracking number go."""

    number: str
    counter_id: int
    kind: Kind = "static"
    label: str | None = None
    outgoing: bool = False

    @property
    def static_call(self) -> bool:
        return self.kind == "static"

    def to_json(self) -> bytes:
        data = asdict(self)
        del data["number"]
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, number: str, data: str | bytes) -> Route:
        raw = orjson.loads(data)
        return cls(number=number, **raw)

    @classmethod
    def parse(cls, **fields: object) -> Route:
        """A route from operator input; raises ``RouteError`` naming every broken field."""
        try:
            value = RouteInput.model_validate(fields)
        except ValidationError as error:
            raise RouteError(field_errors(error)) from None
        return cls(value.number, value.counter_id, value.kind, value.label, value.outgoing)


class RouteError(ValueError):
    """A routing entry that breaks a rule; ``errors`` name each field."""

    def __init__(self, errors: list[FieldError], line: int | None = None) -> None:
        self.errors = errors
        self.line = line
        where = f"line {line}: " if line is not None else ""
        super().__init__(where + "; ".join(str(e) for e in errors))


class RouteOwnerError(RouteError):
    """A number routed to one client account's counter would move to another's (refused, nothing written)."""


class RoutingTable:
    """Reads and writes the routing hash, with a short per-process cache for lookups."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        owners: CounterOwners | None = None,
    ) -> None:
        self._owners = owners
        self._redis = redis
        self._keys = keys
        self._key = keys.routing
        self._routes: CachedHash[str, Route | None] = CachedHash(
            redis, keys.routing, _decode_route, ttl=cache_seconds, clock=clock
        )

    # --- Lookups ---------------------------------------------------------------------------------
    def lookup(self, numbers: Iterable[str | None]) -> dict[str, Route | None]:
        """The route of each distinct number (None for unknown), with at most one HMGET."""
        return self._routes.get(numbers)

    def cached(self, numbers: Iterable[str | None]) -> dict[str, Route | None] | None:
        """:meth:`lookup` of ``numbers`` from the cache alone, or None when it needs its round trip."""
        return self._routes.cached(numbers)

    def forget_cache(self) -> None:
        self._routes.clear()

    # --- Management (CLI) ------------------------------------------------------------------------
    def add(self, routes: Iterable[Route], *, across_accounts: bool = False) -> int:
        """Write (or overwrite) entries; dynamic numbers join their counter's pool (worker/intake/pools.py).

        Raises ``RouteOwnerError`` (before writing anything) when an entry would move a number from one
        client account's counter to another's, unless ``across_accounts``.

        The routing hash and each counter's pool live in different slots (a cluster cannot run one
        MULTI over them): the hash is written first, then each shard's pool changes in one MULTI of
        its own. Adding the same routes again completes a run that stopped in between.
        """
        new = {route.number: route for route in routes}
        if new:
            old = self._current(list(new))
            if not across_accounts:
                self._check_owners(new, old)
            self._redis.hset(self._key, mapping={n: r.to_json() for n, r in new.items()})
            changes: dict[int, list[tuple[str, int, str]]] = {}
            for number, route in new.items():
                before = old.get(number)
                if (
                    before is not None
                    and before.kind == "dynamic"
                    and (before.counter_id, route.kind) != (route.counter_id, "dynamic")
                ):
                    changes.setdefault(self._keys.shard_of(before.counter_id), []).append(
                        ("zrem", before.counter_id, number)
                    )
                if route.kind == "dynamic":
                    changes.setdefault(self._keys.shard_of(route.counter_id), []).append(
                        ("zadd", route.counter_id, number)
                    )
            self._apply_pools(changes)
        self.forget_cache()
        return len(new)

    def _check_owners(self, new: dict[str, Route], old: dict[str, Route]) -> None:
        moved = [
            (n, old[n].counter_id, r.counter_id)
            for n, r in new.items()
            if n in old and old[n].counter_id != r.counter_id
        ]
        if not moved or self._owners is None:
            return
        tenants = self._owners.lookup(c for _, before, after in moved for c in (before, after))
        errors = [
            FieldError(
                "number",
                "owner",
                f"{number} is routed to counter {before} of {_whose(tenants[before])}; counter {after} is of "
                f"{_whose(tenants[after])} (an operator moves it with --across-accounts)",
            )
            for number, before, after in moved
            if tenants[before] != tenants[after]
        ]
        if errors:
            raise RouteOwnerError(errors)

    def remove(self, numbers: Iterable[str]) -> int:
        """Delete entries (and take dynamic ones out of their pool first); returns how many existed."""
        names = list(numbers)
        if not names:
            return 0
        old = self._current(names)
        changes: dict[int, list[tuple[str, int, str]]] = {}
        for number, route in old.items():
            if route.kind == "dynamic":
                changes.setdefault(self._keys.shard_of(route.counter_id), []).append(("zrem", route.counter_id, number))
        self._apply_pools(changes)
        removed = int(self._redis.hdel(self._key, *names))
        self.forget_cache()
        return removed

    def _apply_pools(self, changes: dict[int, list[tuple[str, int, str]]]) -> None:
        """Pool changes, one MULTI per shard (every pool key of a shard shares its ``{sN}`` slot)."""
        for ops in changes.values():
            pipe = self._redis.pipeline(transaction=True)
            for op, counter_id, number in ops:
                if op == "zrem":
                    pipe.zrem(self._keys.pool(counter_id), number)
                else:
                    pipe.zadd(self._keys.pool(counter_id), {number: 0}, nx=True)
            pipe.execute()

    def _current(self, numbers: list[str]) -> dict[str, Route]:
        values = cast(list[str | None], self._redis.hmget(self._key, numbers))
        return {n: Route.from_json(n, v) for n, v in zip(numbers, values, strict=True) if v is not None}

    def all(self) -> list[Route]:
        raw = cast(dict[str, str], self._redis.hgetall(self._key))
        return sorted((Route.from_json(number, value) for number, value in raw.items()), key=lambda r: r.number)


def _decode_route(number: str, value: str | None) -> Route | None:
    return Route.from_json(number, value) if value is not None else None


def _whose(tenant: str | None) -> str:
    return f"account {tenant!r}" if tenant is not None else "the deployment (no client account)"


def parse_routes_csv(text: str) -> list[Route]:
    """Routes from CSV with a header naming some of ``number, counter_id, kind, label, outgoing``.

    Every line is checked before anything is written: the first bad line raises ``RouteError`` with
    its line number, so an import is all or nothing.
    """
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    unknown = [name for name in header if name not in CSV_COLUMNS]
    if not header or "number" not in header or "counter_id" not in header or unknown:
        raise RouteError(
            [FieldError("header", "columns", f"must name number and counter_id, and only {', '.join(CSV_COLUMNS)}")],
            line=1,
        )
    routes: list[Route] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        fields: dict[str, object] = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if None in row:
            raise RouteError([FieldError("line", "columns", "has more cells than the header")], line=line)
        for optional in ("kind", "label", "outgoing"):
            if fields.get(optional) == "":
                fields.pop(optional)
        try:
            route = Route.parse(**fields)
        except RouteError as error:
            raise RouteError(error.errors, line=line) from None
        if route.number in seen:
            raise RouteError(
                [FieldError("number", "unique", f"repeats the number of line {seen[route.number]}")], line=line
            )
        seen[route.number] = line
        routes.append(route)
    return routes
