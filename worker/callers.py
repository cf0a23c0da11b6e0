"""FirstTimeCaller from each counter's caller history, whatever the provider sent.

Per (counter, caller) one key holds the digest of the caller's first call to the counter, for
``first_caller_days`` after their latest call. A call is a first-time call when it is the one that
key names, so the answer is the same however often a call is delivered or replayed. The caller
number appears only as a keyed hash (``caller_hash_secret``), never in a key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis

from worker.keys import Keys
from worker.producer import dedup_digest
from worker.scripts import Scripts, run_many

_PERSON = b"ctw-caller"


@dataclass(frozen=True, slots=True)
class CallerCall:
    """One call to ask about: its counter, the caller's ``+digits`` number and the call's identity."""

    counter_id: int
    caller: str
    call_key: str  # provider + call id: the same delivery always gives the same answer


class CallerHistory:
    """Answers FirstTimeCaller for many calls in one pipelined round trip."""

    def __init__(self, redis: Redis, keys: Keys, *, days: int, secret: bytes | None) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = days * 86_400
        self._secret = secret
        self._scripts = Scripts(redis)

    def caller_hash(self, counter_id: int, caller: str) -> str:
        message = f"{counter_id}\x1f{caller}".encode()
        if self._secret:
            digest = hmac.new(self._secret, message, hashlib.blake2b).digest()[:15]
        else:
            digest = hashlib.blake2b(message, digest_size=15, person=_PERSON).digest()
        return base64.urlsafe_b64encode(digest).decode()

    def first_time(self, calls: Sequence[CallerCall]) -> list[bool]:
        """Record each call in its caller's history; True where it is the caller's first call.

        One ``first_caller.lua`` call per shard, all in one pipelined round trip.
        """
        if not calls:
            return []
        per_shard: dict[int, tuple[list[int], list[str], list[str]]] = {}
        for position, call in enumerate(calls):
            positions, keys, marks = per_shard.setdefault(self._keys.shard_of(call.counter_id), ([], [], []))
            positions.append(position)
            keys.append(self._keys.caller(call.counter_id, self.caller_hash(call.counter_id, call.caller)))
            marks.append(dedup_digest(call.call_key))
        calls_by_shard = [
            (self._scripts.first_caller, keys, [self._ttl, *marks]) for _, keys, marks in per_shard.values()
        ]
        replies_by_shard = run_many(self._redis, calls_by_shard)
        for reply in replies_by_shard:
            if isinstance(reply, Exception):
                raise reply
        answers = [False] * len(calls)
        for (positions, _, _), replies in zip(per_shard.values(), replies_by_shard, strict=True):
            for position, first in zip(positions, replies, strict=True):
                answers[position] = bool(first)
        return answers
