"""Yandex ID stand-in: the authorization-code flow (``/authorize``, ``/token``) and user info (``/info``).

Real hosts are ``oauth.yandex.ru`` (authorize, token) and ``login.yandex.ru`` (info); here all live on
the emulator's own host. Issued tokens are Metrica tokens of the chosen login (see emulator.tokens).
"""

from __future__ import annotations

import base64
import binascii
from html import escape
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from emulator.apicall import json_response
from emulator.config import OAuthApp
from emulator.state import EmulatorState
from emulator.tokens import TokenRecord, granted, login_id


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def find_app(state: EmulatorState, client_id: str | None) -> OAuthApp | None:
    return next((a for a in state.config.oauth_apps if a.client_id == client_id), None)


def redirect_allowed(app: OAuthApp, uri: str) -> bool:
    for allowed in app.redirect_uris:
        if allowed.endswith("*") and uri.startswith(allowed[:-1]):
            return True
        if uri == allowed:
            return True
    return False


def _with_query(uri: str, params: dict[str, str]) -> str:
    joiner = "&" if urlsplit(uri).query else "?"
    return uri + joiner + urlencode(params)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "button{margin-right:1em}</style></head><body>"
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status)


def _error_page(message: str) -> HTMLResponse:
    return _page("Authorization error", f"<p id='error'>{escape(message)}</p>", 400)


def _check_client(state: EmulatorState, client_id: str | None, redirect_uri: str | None) -> tuple[OAuthApp, str]:
    """The app and the redirect target, or ValueError with a message for the error page."""
    app = find_app(state, client_id)
    if app is None:
        raise ValueError(f"Unknown client_id {client_id!r}")
    if redirect_uri:
        if not redirect_allowed(app, redirect_uri):
            raise ValueError(f"redirect_uri {redirect_uri!r} is not registered for this application")
        return app, redirect_uri
    fixed = next((u for u in app.redirect_uris if not u.endswith("*")), None)
    if fixed is None:
        raise ValueError("redirect_uri is required: the application has no fixed callback")
    return app, fixed


async def authorize_page(request: Request) -> Response:
    """``GET /authorize?response_type=code&client_id=&redirect_uri=&state=``: the consent form."""
    state = _state(request)
    params = request.query_params
    try:
        app, redirect_uri = _check_client(state, params.get("client_id"), params.get("redirect_uri"))
    except ValueError as exc:
        return _error_page(str(exc))
    oauth_state = params.get("state", "")
    if params.get("response_type") != "code":
        extra = {"error": "unsupported_response_type", "error_description": "only response_type=code is supported"}
        if oauth_state:
            extra["state"] = oauth_state
        return RedirectResponse(_with_query(redirect_uri, extra), status_code=302)
    logins = state.tokens.logins()
    options = "".join(f"<option value='{escape(login)}'>{escape(login)}</option>" for login in logins)
    hidden = "".join(
        f"<input type='hidden' name='{name}' value='{escape(value)}'>"
        for name, value in (
            ("client_id", app.client_id),
            ("redirect_uri", params.get("redirect_uri") or ""),
            ("state", oauth_state),
            ("scope", params.get("scope", "")),
        )
    )
    body = (
        f"<p>The application <b id='client'>{escape(app.client_id)}</b> asks for access to Yandex Metrica "
        f"({escape(', '.join(sorted(granted(params.get('scope')))))}).</p>"
        "<form id='consent' method='post' action='/authorize'>"
        f"{hidden}<label for='login'>Yandex login</label> "
        f"<select id='login' name='login'>{options}</select>"
        "<p><button type='submit' id='allow' name='decision' value='allow'>Allow</button>"
        "<button type='submit' id='deny' name='decision' value='deny'>Deny</button></p></form>"
    )
    return _page("Yandex ID (emulator): grant access", body)


async def authorize_submit(request: Request) -> Response:
    """The consent form's POST: redirect to the callback with ``code`` or ``error=access_denied``."""
    state = _state(request)
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    try:
        app, redirect_uri = _check_client(state, form.get("client_id"), form.get("redirect_uri"))
    except ValueError as exc:
        return _error_page(str(exc))
    answer: dict[str, str]
    if form.get("decision") == "allow":
        login = form.get("login", "")
        if login not in state.tokens.login_counters:
            return _error_page(f"Unknown login {login!r}")
        expires_at = state.clock.now() + state.config.code_lifetime
        scopes = granted(form.get("scope"))
        code = state.tokens.new_code(app.client_id, login, form.get("redirect_uri") or None, expires_at, scopes)
        state.counts["oauth.codes"] += 1
        answer = {"code": code}
    else:
        answer = {"error": "access_denied", "error_description": "the user denied access"}
    if form.get("state"):
        answer["state"] = form["state"]
    return RedirectResponse(_with_query(redirect_uri, answer), status_code=302)


def _token_error(error: str, description: str, status: int = 400) -> Response:
    return json_response({"error": error, "error_description": description}, status)


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip()).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        client_id, _, secret = decoded.partition(":")
        return client_id, secret
    return form.get("client_id"), form.get("client_secret")


def token_answer(record: TokenRecord, now: float) -> dict[str, Any]:
    expires_in = int(record.expires_at - now) if record.expires_at is not None else 0
    return {
        "token_type": "bearer",
        "access_token": record.token,
        "expires_in": expires_in,
        "refresh_token": record.refresh_token,
    }


async def token(request: Request) -> Response:
    """``POST /token`` (form): ``grant_type=authorization_code`` or ``refresh_token``."""
    state = _state(request)
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    client_id, secret = _client_credentials(request, form)
    app = find_app(state, client_id)
    if app is None or secret != app.client_secret:
        state.counts["oauth.token_errors"] += 1
        return _token_error("invalid_client", "Client not found or the secret does not match", 400)
    grant = form.get("grant_type")
    now = state.clock.now()
    if grant == "authorization_code":
        code = state.tokens.take_code(form.get("code", ""))
        if code is None or code.client_id != app.client_id or now >= code.expires_at:
            state.counts["oauth.token_errors"] += 1
            return _token_error("invalid_grant", "Code has expired, was already used or is unknown")
        login, scopes = code.login, code.scopes
    elif grant == "refresh_token":
        refresh = state.tokens.take_refresh(form.get("refresh_token", ""))
        if refresh is None or refresh.client_id != app.client_id or now >= refresh.expires_at:
            state.counts["oauth.token_errors"] += 1
            return _token_error("invalid_grant", "Refresh token has expired, was already used or is unknown")
        login, scopes = refresh.login, refresh.scopes
    else:
        state.counts["oauth.token_errors"] += 1
        return _token_error("unsupported_grant_type", f"grant_type {grant!r} is not supported")
    record = state.tokens.issue(login, app.client_id, now, state.token_lifetime, "oauth", True, scopes)
    state.counts[f"oauth.{grant}"] += 1
    return json_response(token_answer(record, now))


async def info(request: Request) -> Response:
    """``GET /info?format=json`` with ``Authorization: OAuth <token>`` (or ``oauth_token=``)."""
    state = _state(request)
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    token_value = value.strip() if scheme.lower() in ("oauth", "bearer") else request.query_params.get("oauth_token")
    record = state.tokens.tokens.get(token_value or "")
    if record is None or record.expired(state.clock.now()):
        return Response("invalid token", status_code=401, media_type="text/plain")
    uid = login_id(record.login)
    return json_response(
        {
            "id": uid,
            "login": record.login,
            "client_id": record.client_id,
            "psuid": f"1.{uid}.emulator",
            "default_email": f"{record.login}@yandex.ru",
        }
    )


def routes() -> list[Route]:
    return [
        Route("/authorize", authorize_page, methods=["GET"]),
        Route("/authorize", authorize_submit, methods=["POST"]),
        Route("/token", token, methods=["POST"]),
        Route("/info", info, methods=["GET"]),
    ]
