"""The console's client (account) page and list paging: what one account holds, read from its stored
document's clear parts (no key ring needed, never a secret: tokens by name, login and fingerprint,
telephony accounts by provider and name, API keys by name and prefix, the webhook by host only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

import orjson

from worker.accounts.apikeys import ApiKeys
from worker.accounts.health import problems, token_rows
from worker.accounts.store import clear_view
from worker.notify.breaker import states
from worker.ops.counter_view import held_calls
from worker.ops.fleet import counter_rows

if TYPE_CHECKING:
    from worker.runtime import Runtime

PER_PAGE = 50
T = TypeVar("T")


def paged(items: list[T], page: int, per_page: int = PER_PAGE) -> dict[str, Any]:
    """One page of ``items`` (1-based; a page past the end shows the last one) with the page count."""
    pages = max((len(items) + per_page - 1) // per_page, 1)
    page = min(max(page, 1), pages)
    return {"items": items[(page - 1) * per_page : page * per_page], "page": page, "pages": pages, "total": len(items)}


def page_number(text: str | None) -> int:
    return int(text) if text and text.isdigit() and 0 < int(text) < 1_000_000 else 1


def webhook_host(url: str | None) -> str | None:
    """Where the webhook posts, as host[:port] only (a URL's path or query may carry a credential)."""
    if not url:
        return None
    return urlsplit(url).netloc.rpartition("@")[2] or None


def account(rt: Runtime, account_id: str, page: int, when: Any) -> dict[str, Any] | None:
    raw = cast(str | None, rt.redis.hget(rt.keys.accounts, account_id))
    if raw is None:
        return None
    view = clear_view(raw)
    doc = orjson.loads(raw)
    mine = set(view.counters)
    rows = [r for r in counter_rows(rt, "health") if r["counter_id"] in mine]
    seen = {r["counter_id"] for r in rows}
    rows += [{"counter_id": c, "health": ["no calls yet"], "unknown": True} for c in sorted(mine - seen)]
    trouble = {
        p.token: p for p in problems(rt.redis, rt.keys, rt.settings.token_warning_days) if p.account == account_id
    }
    tokens = []
    for row in token_rows(rt.redis, rt.keys):
        if row.account != account_id:
            continue
        found = trouble.get(row.token)
        tokens.append(
            {
                "name": row.token,
                "login": row.login or "?",
                "fingerprint": row.fingerprint,
                "expires": when(row.expires_at * 1000 if row.expires_at else None),
                "state": found.state if found else (row.check or "ok"),
                "detail": found.detail if found else "",
            }
        )
    telephony = [
        {"provider": str(t.get("provider")), "account": str(t.get("account")), "timezone": t.get("timezone") or "-"}
        for t in doc.get("telephony", [])
    ]
    keys = [
        {"name": k.name, "prefix": k.prefix, "scopes": ", ".join(k.scopes), "created": when(k.created)}
        for k in ApiKeys(rt.redis, rt.keys).listing(account_id)
    ]
    held, exact = held_calls(rt)
    return {
        "account_id": view.id,
        "name": view.name,
        "counters": paged(rows, page),
        "tokens": tokens,
        "telephony": telephony,
        "api_keys": keys,
        "webhook": webhook_host((doc.get("webhook") or {}).get("url")),
        "breaker": states(rt).get(account_id),
        "held": sum(1 for h in held if h.counter_id in mine),
        "held_exact": exact,
    }
