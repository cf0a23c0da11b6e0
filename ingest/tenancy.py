"""Who sent a request, and which counters it may reach (issue 22).

Two kinds of credentials reach the generic API and the status API:

* operator credentials, deployment-wide: ``ingest_api_token`` (writes) and ``status_api_token``
  (reads) reach every counter, as before;
* a client API key (``Authorization: Bearer ctk_...``, :mod:`worker.accounts.apikeys`) reaches only
  the counters of its account, and only the routes of its scopes (``ingest`` writes, ``status`` reads).

A route reads the :class:`Caller` the auth wrapper left in ``request.state.caller`` and asks
:meth:`Tenancy.owned` which of the counters it is about belong to the caller; a write for another
client's counter is refused naming ``counter_id`` (403), a read answers 404 as for an unknown one.
Ownership comes from the registry's counter index (``{acct}:counters``, one ``HMGET``), read per
request: a counter moved to another account stops being reachable at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ingest.input import InputError
from worker.accounts.apikeys import PREFIX, ApiKeys

if TYPE_CHECKING:
    from worker.runtime import Runtime

_BEARER = f"Bearer {PREFIX}"
_DIGITS = re.compile(r"[0-9]{1,19}")


class KeyRefused(Exception):
    """A client API key that is not live, or lacks the route's scope (403)."""

    status = 403


@dataclass(frozen=True, slots=True)
class Caller:
    """The sender of a request: the operator (``account`` None) or one client account's key."""

    account: str | None = None
    key_name: str = ""

    @property
    def operator(self) -> bool:
        return self.account is None


OPERATOR = Caller()


def client_key(header: str) -> str | None:
    """The client API key in an ``Authorization`` header, if it holds one (else an operator token or nothing)."""
    return header[len("Bearer ") :] if header.startswith(_BEARER) else None


def caller_of(request: Request) -> Caller:
    return cast(Caller, getattr(request.state, "caller", OPERATOR))


def counter_of(doc: dict[str, Any]) -> int | None:
    """A document's ``counter_id`` normalised once at the edge: a number or a string of digits becomes the
    number (written back, so every later check and the model see the same value); None when absent.

    Any other form (a float, a bool, "12a") is refused here, so no other reading of it can slip past
    the served and ownership checks.
    """
    value = doc.get("counter_id")
    if value is None:
        return None
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        value = int(value.strip())
        doc["counter_id"] = value
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InputError.one("counter_id", "positive_integer", "must be a positive integer (a number or digits)")
    return value


def not_owned(what: str = "counter_id") -> InputError:
    """The refusal of a write for a counter the key's client does not own (403; nothing is stored)."""
    return InputError.one(what, "not_owned", "is not a counter of this API key's client", status=403)


class Tenancy:
    """Checks client API keys and answers which counters a caller owns."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.keys = ApiKeys(runtime.redis, runtime.keys)

    async def caller(self, key: str, scope: str) -> Caller:
        """The client whose key this is, if it holds ``scope``; 403 otherwise (never echoing the key)."""
        record = await run_in_threadpool(self.keys.check, key)
        if record is None:
            raise KeyRefused("the API key is not valid")
        if scope not in record.scopes:
            raise KeyRefused(f"this API key has no {scope!r} scope")
        return Caller(record.account, record.name)

    def owned(self, caller: Caller, counters: Iterable[int]) -> set[int]:
        """The counters among ``counters`` that ``caller`` may reach (all of them for the operator)."""
        wanted = sorted(set(counters))
        if caller.operator:
            return set(wanted)
        if not wanted:
            return set()
        rt = self.runtime
        owners = cast(list[str | None], rt.redis.hmget(rt.keys.account_counters, [str(c) for c in wanted]))
        return {c for c, owner in zip(wanted, owners, strict=True) if owner == caller.account}

    def owns(self, caller: Caller, counter: int | None) -> bool:
        return counter is not None and counter in self.owned(caller, [counter])
