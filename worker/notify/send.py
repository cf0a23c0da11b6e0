"""Deliver one webhook event: check where it goes, sign it, POST it within one deadline.

The request::

    POST <the account's webhook_url>
    Content-Type: application/json
    webhook-id: final:CTk3S1B7:PROCESSED     (the idempotency key: the same event may arrive twice
                                             after a crash; drop repeats)
    webhook-timestamp: 1795000000            (Unix seconds of this attempt; also "timestamp" in the body)
    webhook-signature: v1,<base64>[ v1,...]  (Standard Webhooks 1.0: see worker/notify/sign.py)
    X-Calltrack-Event / -Timestamp / -Signature   (the headers before: deprecated, one more release)

    {"id": ..., "type": "upload.final" | "call.held", "account": ..., "timestamp": ..., "data": {...}}

The secret and URL are read from the registry here, inside the task: a task's arguments hold only
the event id. The URL's host is resolved once and every address checked (``worker/netguard.py``);
the connection goes to the checked address (``worker/notify/http.py``), within one deadline of
``webhook_timeout`` seconds from connect to the last byte, reading at most
``webhook_max_response_bytes`` of the answer. Any 2xx settles the event; a refused target raises
``WebhookRefusedError`` (dead at once); anything else ``WebhookError`` (retried by the task). Each
outcome feeds the account's circuit breaker (``worker/notify/breaker.py``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpcore
import orjson
import structlog
from celery.exceptions import SoftTimeLimitExceeded

from worker import netguard
from worker.errors import WebhookError, WebhookRefusedError
from worker.notify import breaker, outbox, sign
from worker.notify.http import Deadline, post

if TYPE_CHECKING:
    from worker.accounts.model import Account
    from worker.notify.outbox import Event
    from worker.runtime import Runtime

log = structlog.get_logger(__name__)


def deliver(rt: Runtime, event_id: str) -> str:
    """``delivered``, ``gone`` (settled before), ``dropped`` (no webhook any more) or ``paused`` (the
    account's breaker is open: the event waits in the outbox); raises ``WebhookError``."""
    event = outbox.load(rt, event_id)
    if event is None:
        return "gone"
    account = rt.accounts.get(event.account)
    if account is None or not account.webhook_url or account.webhook_secret is None:
        outbox.drop(rt, event_id)
        log.info("webhook_dropped", event_id=event_id, account=event.account)
        return "dropped"
    verdict = breaker.allow(rt, event.account)
    if verdict.state == "open":
        outbox.defer(rt, event_id, verdict.until_ms)
        rt.metrics.incr("webhook_deliveries", "paused")
        return "paused"
    try:
        try:
            _attempt(rt, event, account)
        except SoftTimeLimitExceeded:  # the task's backstop (a DNS look-up that hung): a deadline all the same
            raise WebhookError(
                f"the webhook of account {event.account!r} ran past its task time limit", "deadline"
            ) from None
    except WebhookError as error:
        breaker.failed(rt, event.account)
        rt.metrics.incr("webhook_deliveries", error.result)
        raise
    breaker.succeeded(rt, event.account)
    outbox.delivered(rt, event_id)
    rt.metrics.incr("webhook_deliveries", "delivered")
    log.info("webhook_delivered", event_id=event_id, account=event.account)
    return "delivered"


def _attempt(rt: Runtime, event: Event, account: Account) -> None:
    assert account.webhook_url is not None
    s = rt.settings
    who = f"the webhook of account {event.account!r}"
    late = f"{who} did not answer in full within the deadline ({s.webhook_timeout:g} s)"
    deadline = Deadline(s.webhook_timeout)  # from the name look-up to the last byte read
    try:
        target = netguard.resolve(account.webhook_url, s.webhook_allowed_networks, timeout=deadline.left())
    except netguard.TargetRefused as refused:
        raise WebhookRefusedError(f"{who} is refused: its URL {refused}", "refused") from None
    except TimeoutError:
        raise WebhookError(late, "deadline") from None
    except (OSError, UnicodeError) as error:
        raise WebhookError(f"{who} was not reached: its host did not resolve ({type(error).__name__})") from None
    now = time.time()
    timestamp = int(now)
    doc = {"id": event.id, "type": event.type, "account": event.account, "timestamp": timestamp, "data": event.data}
    body = orjson.dumps(doc)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "calltrack-webhook/2",
        **sign.headers(account.webhook_secrets(now), event.id, timestamp, body),
    }
    try:
        cap = s.webhook_max_response_bytes
        answer = post(target, account.webhook_url, body, headers, deadline=deadline, max_bytes=cap)
    except httpcore.TimeoutException:
        raise WebhookError(late, "deadline") from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as error:
        raise WebhookError(f"{who} was not reached: {type(error).__name__}") from None
    if not 200 <= answer.status < 300:
        raise WebhookError(f"{who} answered HTTP {answer.status}", "failed")
