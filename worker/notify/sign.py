"""Signatures of a webhook delivery, as the Standard Webhooks 1.0 specification says.

::

    webhook-id: final:CTk3S1B7:PROCESSED       the event id (the same on every retry: the idempotency key)
    webhook-timestamp: 1795000000               Unix seconds of this attempt
    webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">[ v1,<...previous secret>]

The key of a ``whsec_<base64>`` secret is its decoded bytes (the specification's form); the key of a
plain secret (the form before, at least 16 characters) is its UTF-8 bytes, so a receiver verifies
with ``Webhook(secret.encode())`` or ``Webhook("whsec_" + base64(secret))``. During a rotation the
previous secret signs too: two space-separated signatures, either of which verifies.

The headers before (``X-Calltrack-Signature: sha256=<hex HMAC of the body>`` with the current secret,
``X-Calltrack-Timestamp``, ``X-Calltrack-Event``) are still sent for this release, deprecated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from pydantic import SecretStr

from worker.accounts.model import WHSEC_PREFIX

SIGNATURE_HEADER = "X-Calltrack-Signature"  # deprecated: the webhook-* headers replace them
TIMESTAMP_HEADER = "X-Calltrack-Timestamp"
EVENT_HEADER = "X-Calltrack-Event"


def key_bytes(secret: SecretStr) -> bytes:
    plain = secret.get_secret_value()
    if plain.startswith(WHSEC_PREFIX):
        return base64.b64decode(plain.removeprefix(WHSEC_PREFIX))
    return plain.encode()


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def legacy(secret: SecretStr, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()


def headers(secrets: Sequence[SecretStr], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The signing headers of one attempt: ``secrets`` are the current one first, then a previous one."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(key_bytes(s), msg_id, timestamp, body) for s in secrets),
        EVENT_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: legacy(secrets[0], body),
    }
