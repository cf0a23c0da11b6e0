"""Yandex ID: the authorization-code flow, refresh, user info (a token's login), the counters a token reaches.

Onboarding: ``start`` keeps a random state in Redis (named by its digest) and answers the authorize URL;
Yandex sends the browser back to the callback with ``code`` and ``state``; ``finish`` exchanges the code,
asks user info for the login, lists the counters (``GET /management/v1/counters``) and creates or
updates the account. httpx directly: three form posts and two GETs need no OAuth framework.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

import httpx
import orjson
import structlog
from pydantic import SecretStr

from worker.accounts.logins import safe_login
from worker.accounts.model import ACCOUNT_ID, Account, CounterIn, Token
from worker.accounts.registry import Change, Registry
from worker.errors import AccountInputError, OAuthError

if TYPE_CHECKING:
    from config.settings import Settings

log = structlog.get_logger(__name__)
TIMEOUT = httpx.Timeout(10.0)
COUNTERS_PAGE = 1000


@dataclass(frozen=True)
class Grant:
    """What the token endpoint answered (``scopes`` only where the answer names them: no Yandex page
    shows ``scope`` in the token answer, RFC 6749 section 5.1 allows it)."""

    token: SecretStr
    refresh_token: SecretStr | None
    expires_at: float | None
    scopes: frozenset[str] | None = None


#: the scopes the worker uses: metrika:read (counters list, counter settings, goals), metrika:write
#: (option switches, new goals), metrika:offline_data (uploads, their statuses and lists)
SCOPES = ("metrika:read", "metrika:write", "metrika:offline_data")


def _client_auth(settings: Settings) -> tuple[str, str]:
    if not settings.oauth_client_id or settings.oauth_client_secret is None:
        raise OAuthError("CALLTRACK_OAUTH_CLIENT_ID and CALLTRACK_OAUTH_CLIENT_SECRET must be set", error="config")
    return settings.oauth_client_id, settings.oauth_client_secret.get_secret_value()


def _request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    try:
        return httpx.request(method, url, timeout=TIMEOUT, **kwargs)
    except httpx.HTTPError as error:
        # The URL only: headers and bodies hold tokens and codes.
        raise OAuthError(
            f"{method} {url.split('?', maxsplit=1)[0]} failed: {type(error).__name__}", error="transport"
        ) from None


def user_login(settings: Settings, token: SecretStr) -> str | None:
    """The Yandex login of ``token`` from the user-info endpoint."""
    answer = _request(
        "GET",
        settings.user_info_url,
        params={"format": "json"},
        headers={"Authorization": f"OAuth {token.get_secret_value()}"},
    )
    if answer.status_code != 200:
        raise OAuthError(f"user info answered {answer.status_code}", error="user_info", status=answer.status_code)
    login = answer.json().get("login")
    return str(login) if login else None


def _grant(settings: Settings, form: dict[str, str]) -> Grant:
    client_id, secret = _client_auth(settings)
    answer = _request("POST", f"{settings.oauth_root}/token", data=form, auth=(client_id, secret))
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if answer.status_code != 200 or "access_token" not in body:
        error = str(body.get("error") or answer.status_code)
        raise OAuthError(
            f"Yandex ID refused the {form['grant_type']} grant: {error}", error=error, status=answer.status_code
        )
    expires_in = int(body.get("expires_in") or 0)
    refresh = body.get("refresh_token")
    scope = body.get("scope")
    return Grant(
        SecretStr(str(body["access_token"])),
        SecretStr(str(refresh)) if refresh else None,
        time.time() + expires_in if expires_in > 0 else None,
        frozenset(str(scope).replace(",", " ").split()) if isinstance(scope, str) else None,
    )


def refresh(settings: Settings, refresh_token: SecretStr) -> Grant:
    return _grant(settings, {"grant_type": "refresh_token", "refresh_token": refresh_token.get_secret_value()})


def counters_of(settings: Settings, token: SecretStr) -> list[int]:
    """Every counter the token reaches (``GET /management/v1/counters``, paged, offset 1-based)."""
    found: list[int] = []
    offset = 1
    while True:
        answer = _request(
            "GET",
            f"{settings.api_base_url}/management/v1/counters",
            params={"per_page": COUNTERS_PAGE, "offset": offset},
            headers={"Authorization": f"OAuth {token.get_secret_value()}"},
        )
        if answer.status_code != 200:
            raise OAuthError(
                f"the counters list answered {answer.status_code}", error="counters", status=answer.status_code
            )
        page = cast(list[dict[str, Any]], answer.json().get("counters") or [])
        found.extend(int(c["id"]) for c in page)
        if len(page) < COUNTERS_PAGE:
            return found
        offset += len(page)


def _refused(error: OAuthError) -> bool:
    return error.status in (401, 403)


def _check_scopes(settings: Settings, grant: Grant) -> list[int]:
    """The counters the token reaches, once it has every scope the worker uses; else ``OAuthError``
    naming the missing ones. Where the token answer names its scopes they are read; otherwise (Yandex
    documents no such field) each is tried where a request shows it: the counters list (metrika:read)
    and one counter's calls upload list (metrika:offline_data). metrika:write has no request that shows
    it without changing something: a refusal at counter setup names it."""
    missing = [] if grant.scopes is None else [s for s in SCOPES if s not in grant.scopes]
    reached: list[int] = []
    try:
        reached = counters_of(settings, grant.token)
    except OAuthError as error:
        if not _refused(error):
            raise
        missing.append("metrika:read")
    if grant.scopes is None and reached:
        answer = _request(
            "GET",
            f"{settings.api_base_url}/management/v1/counter/{reached[0]}/offline_conversions/calls_uploadings",
            params={"limit": 1},
            headers={"Authorization": f"OAuth {grant.token.get_secret_value()}"},
        )
        if answer.status_code in (401, 403):
            missing.append("metrika:offline_data")
    if missing:
        names = ", ".join(sorted(set(missing)))
        raise OAuthError(
            f"the token lacks the scopes {names}: give the application {', '.join(SCOPES)} and connect again",
            error="scope",
            status=403,
        )
    if grant.scopes is None:
        log.info("oauth_scope_unverified", scope="metrika:write", why="no request shows it without a change")
    return reached


def redirect_url(settings: Settings) -> str:
    if settings.oauth_redirect_url is not None:
        return str(settings.oauth_redirect_url)
    base = (
        str(settings.ingest_public_url).rstrip("/")
        if settings.ingest_public_url
        else (f"http://{settings.ingest_host}:{settings.ingest_port}")
    )
    return f"{base}/oauth/callback"


def start(reg: Registry, account_id: str, *, redirect_uri: str | None = None) -> str:
    """The authorize URL that onboards (or re-authorizes) ``account_id``; valid ``oauth_state_seconds``."""
    settings = reg.settings
    client_id, _ = _client_auth(settings)
    if not _valid_id(account_id):
        raise AccountInputError("account", f"must match {ACCOUNT_ID}")
    state = secrets.token_urlsafe(24)
    target = redirect_uri or redirect_url(settings)
    reg.redis.set(
        reg.keys.oauth_state(state),
        orjson.dumps({"account": account_id, "redirect_uri": target}),
        ex=settings.oauth_state_seconds,
    )
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": target,
        "state": state,
        "scope": " ".join(SCOPES),
    }
    return f"{settings.oauth_root}/authorize?{urlencode(query)}"


def _valid_id(account_id: str) -> bool:
    import re  # noqa: PLC0415

    return re.fullmatch(ACCOUNT_ID, account_id) is not None


@dataclass(frozen=True)
class Onboarded:
    account: Account
    change: Change
    skipped: list[int]  # counters the token reaches that another account holds


def finish(reg: Registry, code: str, state: str) -> Onboarded:
    """Exchange the code; learn the login and the counters; create or update the account."""
    raw = cast(str | None, reg.redis.getdel(reg.keys.oauth_state(state)))
    if raw is None:
        raise OAuthError("the onboarding link is unknown, used or expired; start again", error="state")
    pending = orjson.loads(raw)
    settings = reg.settings
    grant = _grant(
        settings,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": str(pending.get("redirect_uri") or "")},
    )
    login = safe_login(user_login(settings, grant.token))
    reached = _check_scopes(settings, grant)
    account_id = str(pending["account"])
    old = reg.get(account_id)
    owners = {c: owner[0].id for c in reached if (owner := reg.counter(c)) is not None}
    taken = sorted(c for c, owner in owners.items() if owner != account_id)
    name = f"oauth-{login}"[:32] if login else "oauth"
    token = Token(name, grant.token, grant.refresh_token, grant.expires_at, login)
    base = old or Account(id=account_id, name=login or account_id)
    tokens = (*[t for t in base.tokens if t.name != name], token)
    have = {c.id for c in base.counters}
    added = tuple(CounterIn(id=c, token=name) for c in reached if c not in have and c not in taken)
    account = replace(base, tokens=tokens, counters=(*base.counters, *added))
    change = reg.commit({account_id: account})
    log.info("account_onboarded", account=account_id, login=login, counters=len(added), skipped=len(taken))
    return Onboarded(reg.get(account_id) or account, change, taken)
