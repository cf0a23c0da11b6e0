"""Deliver one webhook event: sign the body with the account's secret and POST it.

The request::

    POST <the account's webhook_url>
    Content-Type: application/json
    X-Calltrack-Event: final:CTk3S1B7:PROCESSED        (the idempotency key: the same event may
                                                       arrive twice after a crash; drop repeats)
    X-Calltrack-Timestamp: 1795000000                  (Unix seconds; also "timestamp" in the body)
    X-Calltrack-Signature: sha256=<hex HMAC-SHA256 of the raw body with the webhook secret>

    {"id": ..., "type": "upload.final" | "call.held", "account": ..., "timestamp": ..., "data": {...}}

The secret and URL are read from the registry here, inside the task: a task's arguments hold only the
event id. Any 2xx settles the event; anything else raises ``WebhookError`` (retried by the task).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import TYPE_CHECKING

import httpx
import orjson
import structlog

from worker.errors import WebhookError
from worker.notify import outbox

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)
SIGNATURE_HEADER = "X-Calltrack-Signature"
TIMESTAMP_HEADER = "X-Calltrack-Timestamp"
EVENT_HEADER = "X-Calltrack-Event"


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def deliver(rt: Runtime, event_id: str) -> str:
    """``delivered``, ``gone`` (settled before) or ``dropped`` (no webhook any more); raises ``WebhookError``."""
    event = outbox.load(rt, event_id)
    if event is None:
        return "gone"
    account = rt.accounts.get(event.account)
    if account is None or not account.webhook_url or account.webhook_secret is None:
        outbox.drop(rt, event_id)
        log.info("webhook_dropped", event_id=event_id, account=event.account)
        return "dropped"
    timestamp = int(time.time())
    doc = {"id": event.id, "type": event.type, "account": event.account, "timestamp": timestamp, "data": event.data}
    body = orjson.dumps(doc)
    headers = {
        "Content-Type": "application/json",
        EVENT_HEADER: event.id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(account.webhook_secret.get_secret_value().encode(), body),
        "User-Agent": "calltrack-webhook/1",
    }
    try:
        timeout = rt.settings.webhook_timeout
        answer = httpx.post(account.webhook_url, content=body, headers=headers, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as error:
        reason = type(error).__name__
        raise WebhookError(f"the webhook of account {event.account!r} was not reached: {reason}") from None
    if not 200 <= answer.status_code < 300:
        raise WebhookError(f"the webhook of account {event.account!r} answered HTTP {answer.status_code}")
    outbox.delivered(rt, event_id)
    log.info("webhook_delivered", event_id=event_id, account=event.account)
    return "delivered"
