"""The project's exceptions, split into permanent (never retry) and retryable ones.

::

    CalltrackError
    ├── ProducerError                 Redis refused accepted events (full, read-only, down)
    │   └── HeldFullError             the held stream is at held_max_calls: new held calls refused
    │       └── HeldAccountFullError  one client's held calls are at held_max_calls_per_account
    ├── ForeignCallError              a client's credential brought a call for another client (403)
    ├── StoreConfigError              Redis cannot do what the settings ask (permanent)
    │   └── ShardCountError           CALLTRACK_SHARDS differs from the deployment's
    ├── DeferredError                 the work cannot start now (counter busy); try after a delay
    │   ├── CounterRemovedError       the counter left the account registry; its batches wait, visible
    │   └── TokenUnreadableError      the counter's account cannot be decrypted here; its batches wait
    ├── AdoptionError                 Metrica's uploads do not match a batch one to one (permanent)
    ├── UnknownCounterError           a lookup named counters nothing of this deployment knows
    ├── AccountError                  the account registry refused a change or lookup (nothing stored)
    │   ├── AccountInputError         bad input: names the field and the rule
    │   ├── SecretKeyError            no key ring, or a secret no key of the ring opens
    │   └── OAuthError                Yandex ID refused a code, a refresh or a user-info request
    ├── WebhookError                  a webhook delivery failed (retried with back-off, then dead)
    │   └── WebhookRefusedError       its target is not allowed (SSRF guard): dead at once, no retry
    └── MetricaError                  anything the Metrica API or the way to it did wrong
        ├── PermanentError            retrying the same request cannot help
        │   ├── InvalidUploadError    400: the file or a parameter is not acceptable
        │   ├── AuthError             401/403: token missing, invalid, or without access
        │   ├── NotFoundError         404: no such counter or upload
        │   └── UnexpectedAnswerError another 4xx than the ones above
        └── RetryableError            the same request may succeed later
            ├── QuotaError            429/420: a quota was exceeded (``quota`` names which)
            ├── ServerError           5xx: backend_error, timeout (outcome unknown for uploads)
            ├── TransportError        no answer: connect/read timeout, dropped connection
            └── UnreadableAnswerError a 2xx body we cannot read (outcome unknown for uploads)

Every ``MetricaError`` carries the request that caused it as ``method`` and ``url`` (never its
headers: they hold the OAuth token), the HTTP ``status`` when there was one, Metrica's
``error_type`` and message.
"""

from __future__ import annotations


class CalltrackError(Exception):
    """Base of every error this project raises on purpose."""


class ProducerError(CalltrackError):
    """Redis did not accept the events: nothing of the request may be considered stored."""


class HeldFullError(ProducerError):
    """The held stream holds ``held_max_calls``: calls that would be held are refused (503, retry later)."""


class HeldAccountFullError(HeldFullError):
    """One client's held calls are at ``held_max_calls_per_account``: only its calls are refused (503)."""


class ForeignCallError(CalltrackError):
    """Permanent: a client's credential brought a call for another client's number or counter (403).

    ``reason`` is a bounded code word (``foreign_number``, ``foreign_counter``); nothing was stored.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class StoreConfigError(CalltrackError):
    """Permanent: Redis cannot do what the settings ask (an older server for WAITAOF, ...)."""


class ShardCountError(StoreConfigError):
    """Permanent: this process's shard count is not the one the deployment was started with."""


class FormatVersionError(StoreConfigError):
    """Permanent: Redis holds a data format this release does not know (a newer release wrote it)."""


class OlderReleaseAliveError(StoreConfigError):
    """Permanent until they stop: processes of an older release still run on the data this one would migrate."""


class DeferredError(CalltrackError):
    """The work cannot start now (its counter is busy, or an earlier attempt may be in flight)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CounterRemovedError(DeferredError):
    """The counter was removed from the account registry: its batches stay sealed (visible) and wait."""


class JoinWindowClosed(DeferredError):
    """The counter's join window is not open yet (its option was just switched on): its data waits."""


class TokenUnreadableError(DeferredError):
    """The counter's account cannot be read (no key ring, wrong key): its batches wait, never another token."""


class RestoreHeldError(DeferredError):
    """A restore of Redis was seen on the batch's shard: its work waits for ``ctl restore confirm``."""


class UnknownCounterError(CalltrackError):
    """No token, account, routing entry, batch or pending call names the counters asked about."""

    def __init__(self, counters: list[int]) -> None:
        self.counters = counters
        names = ", ".join(str(c) for c in counters)
        super().__init__(f"counter: {names} unknown (no token, account, routing entry, batch or pending call)")


class AccountError(CalltrackError):
    """The account registry refused a change or a lookup; nothing was stored. Never holds a secret."""


class AccountInputError(AccountError):
    """Bad input: ``field`` and ``rule`` say what is wrong (``field: rule`` as the message)."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class SecretKeyError(AccountError):
    """No key ring is configured, or no key of it opens a stored secret."""


class OAuthError(AccountError):
    """Yandex ID refused a code exchange, a refresh or a user-info request (``error`` is its code word)."""

    def __init__(self, message: str, *, error: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.status = status


class AdoptionError(CalltrackError):
    """Permanent: Metrica holds no single upload that is surely this batch's file.

    Adoption needs exactly one upload whose comment is the batch id and whose ``source_quantity``
    equals the batch's row count; anything else (two files with the comment, another row count)
    means the comment may belong to another file, so the batch is quarantined instead.
    """


class WebhookError(CalltrackError):
    """A webhook delivery failed (network error or a non-2xx answer): retried with back-off, then dead.
    Its text names the account and the answer, never the URL (it may hold a token) or the secret;
    ``result`` is a metric word (``failed``, ``deadline``, ``refused``)."""

    def __init__(self, message: str, result: str = "failed") -> None:
        super().__init__(message)
        self.result = result


class WebhookRefusedError(WebhookError):
    """Permanent: the webhook's target resolves to an address webhooks may not reach (worker/netguard.py)."""


class MetricaError(CalltrackError):
    """The Metrica API refused or failed a request."""

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        url: str = "",
        status: int | None = None,
        error_type: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url
        self.status = status
        self.error_type = error_type

    def __str__(self) -> str:
        where = f" ({self.method} {self.url})" if self.method else ""
        code = f"{self.status} " if self.status is not None else ""
        kind = f"{self.error_type}: " if self.error_type else ""
        return f"{code}{kind}{self.message}{where}"

    def __reduce__(self) -> tuple[object, ...]:
        # Keeps the keyword fields when the error crosses a process boundary (Celery).
        return (_rebuild, (type(self), self.message, self.method, self.url, self.status, self.error_type))


def _rebuild(
    cls: type[MetricaError], message: str, method: str, url: str, status: int | None, error_type: str
) -> MetricaError:
    return cls(message, method=method, url=url, status=status, error_type=error_type)


class PermanentError(MetricaError):
    """Retrying the same request cannot succeed."""


class InvalidUploadError(PermanentError):
    """400: Metrica refused the file or a parameter (invalid_uploading, invalid_parameter, ...)."""


class AuthError(PermanentError):
    """401/403: the token is missing, invalid, or its login cannot reach the counter."""


class NotFoundError(PermanentError):
    """404: the counter or upload does not exist."""


class UnexpectedAnswerError(PermanentError):
    """A refusal this client has no other class for (a 4xx other than 400, 401, 403, 404)."""


class RetryableError(MetricaError):
    """The same request may succeed later."""

    #: True when the server may have acted on the request although we saw no success.
    outcome_unknown: bool = False


class QuotaError(RetryableError):
    """429/420: a request quota was exceeded; ``error_type`` names which one."""


class ServerError(RetryableError):
    """5xx: Metrica failed; an upload may or may not have been stored."""

    outcome_unknown = True


class TransportError(RetryableError):
    """No answer arrived (timeout, refused or dropped connection)."""

    outcome_unknown = True


class UnreadableAnswerError(RetryableError):
    """A 2xx answer in no shape this client reads: Metrica may have stored the file (outcome unknown)."""

    outcome_unknown = True
