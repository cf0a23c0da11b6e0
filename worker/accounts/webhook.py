"""An account's webhook fields as stored: the URL checked where it points, the secret and its rotation.

The URL is refused when it is set if it points where webhooks may not go (``worker/netguard.py``): a
literal address or ``localhost`` always, a name by what it resolves to now (a name that does not
resolve yet is accepted; every delivery checks again). A new secret does not end the old one at once:
the previous secret keeps signing (a second ``v1,`` signature) for ``webhook_secret_overlap_seconds``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from worker import netguard
from worker.accounts.model import Account, AccountIn
from worker.errors import AccountInputError

if TYPE_CHECKING:
    from config.settings import Settings

ALLOW_HINT = "CALLTRACK_WEBHOOK_ALLOWED_NETWORKS may allow a network"


def check_url(url: str, settings: Settings) -> None:
    """Raise ``AccountInputError`` naming ``webhook_url`` and the rule when the URL points where it may not."""
    allowed = settings.webhook_allowed_networks
    try:
        netguard.resolve(url, allowed, timeout=settings.webhook_timeout)
    except netguard.TargetRefused as refused:
        raise AccountInputError("webhook_url", f"is refused: it {refused} ({ALLOW_HINT})") from None
    except (OSError, UnicodeError):
        pass  # not resolvable now (or not in time): each delivery resolves and checks it again


def webhook_fields(spec: AccountIn, old: Account | None, settings: Settings) -> dict[str, Any]:
    """``webhook_secret``, ``webhook_previous`` and ``webhook_previous_until`` of the account ``spec`` sets."""
    assert spec.webhook_url is not None
    if old is None or old.webhook_url != spec.webhook_url:
        check_url(spec.webhook_url, settings)
    before = old.webhook_secret if old else None
    secret = spec.webhook_secret or before
    if secret is None:
        raise AccountInputError("webhook_secret", "is required with a webhook_url (it signs every body)")
    now = time.time()
    if before is not None and secret.get_secret_value() != before.get_secret_value():
        overlap = settings.webhook_secret_overlap_seconds
        return {
            "webhook_secret": secret,
            "webhook_previous": before if overlap else None,
            "webhook_previous_until": now + overlap if overlap else 0.0,
        }
    if old is not None and old.webhook_previous is not None and now < old.webhook_previous_until:
        return {
            "webhook_secret": secret,
            "webhook_previous": old.webhook_previous,
            "webhook_previous_until": old.webhook_previous_until,
        }
    return {"webhook_secret": secret}
