"""FirstTimeCaller from each counter's caller history, whatever the provider sent.

Per (counter, caller) one field of a bucketed hash holds the digest of the caller's first call to
the counter, for ``first_caller_days`` after their latest call (``lua/xadd_many.lua``: one hash per
shard, period and bucket, expiring whole; every call moves its caller's field into the current
period). A call is a first-time call when it is the one that field names, so the answer is the same
however often a call is delivered or replayed. The caller number appears only as a keyed hash
(``caller_hash_secret``), never in a key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from redis import Redis

from worker.dataplane.keys import Keys
from worker.delivery.producer import dedup_digest

_PERSON = b"ctw-caller"


@dataclass(frozen=True, slots=True)
class CallerCall:
    """One call to ask about: its counter, the caller's ``+digits`` number and the call's identity."""

    counter_id: int
    caller: str
    call_key: str  # provider + call id: the same delivery always gives the same answer


@dataclass(frozen=True, slots=True)
class CallerMark:
    """Where a call is recorded in its caller's history, and the mark that names the call.

    ``key`` is the caller's digest (base64 of a keyed hash of counter and number): it names the field
    and bucket of the caller-history hashes, and the one-key history of before issue 18
    (``Keys.caller``), which the script still reads for one ``first_caller_days`` after the upgrade.
    """

    key: str
    mark: str


class CallerHistory:
    """Names each call's place in its caller's history; FirstTimeCaller is decided when it is stored."""

    def __init__(self, redis: Redis, keys: Keys, *, days: int, secret: bytes | None) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = days * 86_400
        self._secret = secret

    def caller_hash(self, counter_id: int, caller: str) -> str:
        message = f"{counter_id}\x1f{caller}".encode()
        if self._secret:
            digest = hmac.new(self._secret, message, hashlib.blake2b).digest()[:15]
        else:
            digest = hashlib.blake2b(message, digest_size=15, person=_PERSON).digest()
        return base64.urlsafe_b64encode(digest).decode()

    def mark(self, call: CallerCall) -> CallerMark:
        """The history key and call mark the producer stores the call with (lua/xadd_many.lua decides
        FirstTimeCaller in the same step that stores the call: no round trip of its own)."""
        return CallerMark(self.caller_hash(call.counter_id, call.caller), dedup_digest(call.call_key))

    @property
    def ttl(self) -> int:
        return self._ttl
