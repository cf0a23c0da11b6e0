"""Whose is a counter, and may a telephony credential reach it (issue 22): one client's telephony account never
writes into another client's counters.

A call carries the *owner* of the credential that brought it (``InboundCall.owner``): the registry
account whose telephony secret checked its signature, or None for an operator credential (the
deployment's own: ``CALLTRACK_TWILIO_AUTH_TOKENS``, ``_ZADARMA_SECRETS``, ``_MANGO_ACCOUNTS`` (the
``env`` account), Twilio Webhook Rule keys whose AccountSid no client registered, AMI and CDR
readers). A counter's *tenant* is the registry account that holds it (``{acct}:counters``), or None
for a deployment-level counter: one in no account, or in the ``env`` account. A credential reaches a
counter when it is an operator's, or when its owner is the counter's tenant; so a client's
credential reaches only its own counters, never a deployment-level one.

The same rule decides which routing entries may change hands (``RoutingTable.add``): a number
routed to one tenant's counter is not moved to another tenant's counter unless the operator says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from redis import Redis

from worker.accounts.registry import ENV_ACCOUNT
from worker.dataplane.keys import Keys
from worker.errors import ForeignCallError
from worker.intake.cached_hash import CachedHash

FOREIGN_NUMBER = "foreign_number"  # the tracking number routes to another tenant's counter
FOREIGN_COUNTER = "foreign_counter"  # the call names a counter of another tenant
DEPLOYMENT_ACCOUNTS = frozenset({ENV_ACCOUNT})  # accounts whose credentials and counters are the operator's


def tenant(account_id: str | None) -> str | None:
    """The tenant an account id stands for: None for the deployment (no account, or ``env``)."""
    return None if account_id is None or account_id in DEPLOYMENT_ACCOUNTS else account_id


def reaches(owner: str | None, counter_tenant: str | None) -> bool:
    """Whether a credential of ``owner`` (None: an operator's) may write to a counter of ``counter_tenant``."""
    return owner is None or owner == counter_tenant


class CounterOwners:
    """The tenant of each counter, from the registry's clear-text index (no key ring needed), cached."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        cache_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tenants: CachedHash[int, str | None] = CachedHash(
            redis, keys.account_counters, lambda _, owner: tenant(owner), ttl=cache_seconds, clock=clock
        )

    def lookup(self, counters: Iterable[int]) -> dict[int, str | None]:
        """The tenant of each distinct counter (None: deployment-level), with at most one HMGET."""
        return self._tenants.get(counters)

    def cached(self, counters: Iterable[int]) -> dict[int, str | None] | None:
        """:meth:`lookup` of ``counters`` from the cache alone, or None when it needs its round trip."""
        return self._tenants.cached(counters)

    def check(self, owner: str | None, counter_id: int) -> None:
        """Raise ``ForeignCallError`` (``foreign_counter``) when ``owner``'s credential may not reach the counter."""
        if owner is not None and not reaches(owner, self.lookup([counter_id])[counter_id]):
            raise ForeignCallError(foreign_message("counter_id", counter_id), reason=FOREIGN_COUNTER)


def foreign_message(what: str, value: object) -> str:
    """The refusal's text: names the field and the rule, never the other client (nor a secret)."""
    return (
        f"{what} {value} does not belong to the client account of this credential: a client's telephony "
        "credential reaches only its own counters"
    )
