"""Identifiers of work. Batch ids: ``CT<epoch>S<shard>B<seq>R<nonce>``, letters and digits only (a valid
``comment`` for every upload kind); the nonce is chosen in Python, never by Redis (issue 13). A token's
fingerprint: the name quota keys and metrics use for a token whose login is unknown."""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from dataclasses import dataclass

from pydantic import SecretStr

_BATCH_RE = re.compile(r"^CT([a-z0-9]+)S([0-9]+)B([0-9]+)(?:R([a-z0-9]+))?$")
_NONCE_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True, slots=True)
class BatchId:
    """The parts of a batch id; ``nonce`` is "" for ids sealed before issue 13."""

    epoch: str
    shard: int
    seq: int
    nonce: str = ""

    def __str__(self) -> str:
        return batch_id(self.epoch, self.shard, batch_tail(self.seq, self.nonce) if self.nonce else str(self.seq))


def batch_id(epoch: str, shard: int, tail: str) -> str:
    """``CT<epoch>S<shard>B<tail>``; ``tail`` is ``<seq>R<nonce>`` (or ``<seq>`` alone, before issue 13).
    The Lua side builds the same id with the prelude's ``DP.batch_id`` (lua/prelude.lua)."""
    return f"CT{epoch}S{shard}B{tail}"


def batch_tail(seq: int | str, nonce: str) -> str:
    """The tail ``<seq>R<nonce>`` a buffer reserves when it opens (``DP.batch_tail`` in Lua)."""
    return f"{seq}R{nonce}"


def parse_batch_id(text: str) -> BatchId:
    """The parts of a batch id; ValueError when ``text`` is not one."""
    match = _BATCH_RE.match(text)
    if match is None:
        raise ValueError(f"not a batch id: {text[:64]!r}")
    return BatchId(match.group(1), int(match.group(2)), int(match.group(3)), match.group(4) or "")


def shard_of_batch(text: str) -> int:
    """The shard a batch id was sealed in (``CT<epoch>S<shard>B<seq>R<nonce>``)."""
    return parse_batch_id(text).shard


def batch_nonce() -> str:
    """The random part of the batch ids sealed by one script run, chosen here and never by Redis.

    ``seq`` is a Redis counter, and goes back when Redis loses its last second or is restored; the
    nonce does not, so a batch id Metrica already holds as a comment never comes back.
    """
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(10))


def is_batch_id(text: str) -> bool:
    return _BATCH_RE.match(text) is not None


def fingerprint(token: SecretStr) -> str:
    """A stable, non-reversible name for the login a token belongs to."""
    return hashlib.blake2b(token.get_secret_value().encode(), digest_size=6).hexdigest()
