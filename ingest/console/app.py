"""The operator console: ``/console/`` on the ingestion service (issue 19).

Login with ``CALLTRACK_CONSOLE_USER`` and ``CALLTRACK_CONSOLE_PASSWORD``; without a console password
the console answers 404 (no other credential opens it: issue 22). The session is a signed cookie
(Starlette's SessionMiddleware; its key is derived from the password, so changing the password ends
every session), ``SameSite=Strict``, ``HttpOnly``, ``Secure`` with ``CALLTRACK_CONSOLE_SECURE_COOKIE``,
scoped to ``/console``, that names a server-side session: a random id whose digest is a Redis key
living ``console_session_seconds`` (``Keys.console``). Logout deletes that key, so the cookie
stops working at once even if it was copied. Every form carries the session's CSRF token and every
POST checks it. Ten failed logins from one address lock the form for five minutes. A form's body is
read within :data:`MAX_FORM_BYTES` (413 beyond, while it is read).
Templates are Jinja2 with autoescaping; answers carry a strict
Content-Security-Policy (no script at all) and are never cached.

    GET  /console/                        the fleet: throughput chart, stream lag, quota, workers, webhooks
    GET  /console/counters?sort=health    every counter, worst first (failure rate, held, oldest, token)
    GET  /console/counters/{id}           a counter: figures, uploads, held calls (paged), refused rows
    GET  /console/accounts/{id}           a client: its counters with health, tokens' health, telephony
                                          accounts, API keys, webhook and breaker, held calls (no secret)
    GET  /console/calls?provider=&call_id=   where a call is
    GET  /console/quarantine              quarantined batches with replay and discard buttons
    POST /console/quarantine/{batch}/replay | /discard     (CSRF token; discard needs a reason)
    GET|POST /console/login, POST /console/logout
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ingest.console import account_page, pages
from ingest.core import IngestCore
from ingest.edge import BodyTimeout, BodyTooLarge, read_body
from worker.delivery.replay import QuarantineError, discard, replay

log = structlog.get_logger(__name__)
Page = Callable[[Request], Awaitable[Response]]
_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
LOGIN_FAILURES = 10  # failed logins per client address and window before the form refuses (429)
LOGIN_WINDOW_SECONDS = 300
MAX_FORM_BYTES = 8 * 1024  # a console form (login, replay, discard with a 500-character reason)
MAX_FORM_FIELDS = 20
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Console:
    def __init__(self, core: IngestCore) -> None:
        self.core = core
        s = core.settings
        self.password = s.console_password
        self.user = s.console_user
        self.session_seconds = s.console_session_seconds

    # --- plumbing ------------------------------------------------------------------------------
    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = request.session
        html = _TEMPLATES.get_template(template).render(
            user=session.get("user"), csrf=self.csrf(request), flash=session.pop("flash", None), **context
        )
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    @staticmethod
    def csrf(request: Request) -> str:
        token = request.session.get("csrf")
        if not token:
            token = request.session["csrf"] = secrets.token_urlsafe(32)
        return str(token)

    async def form(self, request: Request) -> dict[str, str]:
        """The posted form (URL-encoded, at most :data:`MAX_FORM_BYTES`: ``BodyTooLarge`` while it is
        read), once its CSRF token matched the session's (else ``CsrfError``)."""
        body = await read_body(request, MAX_FORM_BYTES)
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise CsrfError from None  # not a form of ours
        data = dict(pairs)
        given = data.get("csrf", "")
        expected = str(request.session.get("csrf", ""))
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            raise CsrfError
        return data

    # --- server-side sessions (issue 22) ---------------------------------------------------------
    def _session_key(self, request: Request) -> str | None:
        sid = request.session.get("sid")
        return self.core.runtime.keys.console("session", str(sid)) if sid else None

    async def logged_in(self, request: Request) -> bool:
        """The cookie names a session Redis still holds (logout and expiry delete it)."""
        key = self._session_key(request)
        if not request.session.get("user") or key is None:
            return False
        return bool(await self.run(self.core.runtime.redis.exists, key))

    async def start_session(self, request: Request) -> None:
        request.session.clear()
        sid = secrets.token_urlsafe(32)
        await self.run(self.core.runtime.redis.set, self.core.runtime.keys.console("session", sid), self.user,
                       ex=self.session_seconds)  # fmt: skip
        request.session["sid"] = sid
        request.session["user"] = self.user
        request.session["csrf"] = secrets.token_urlsafe(32)  # a new token for the logged-in session

    async def end_session(self, request: Request) -> None:
        key = self._session_key(request)
        if key is not None:
            await self.run(self.core.runtime.redis.delete, key)
        request.session.clear()

    def page(self, handler: Page, *, post: bool = False) -> Page:
        async def checked(request: Request) -> Response:
            if not await self.logged_in(request):
                request.session.pop("user", None)
                if post:
                    return self.render(request, "error.html", 401, title="Login required",
                                       message="Log in first: nothing was changed.")  # fmt: skip
                return RedirectResponse(f"/console/login?next={quote(request.url.path)}", 303)
            try:
                return await handler(request)
            except BodyTooLarge:
                return self.too_large(request)
            except BodyTimeout:
                return self.render(request, "error.html", 408, title="Too slow", message="The form did not arrive "
                                   "in time. Nothing was changed.")  # fmt: skip
            except CsrfError:
                log.warning("console_csrf_refused", path=request.url.path)
                return self.render(request, "error.html", 403, title="Refused",
                                   message="The form's CSRF token is not valid: reload the page and try again. "
                                   "Nothing was changed.")  # fmt: skip

        return checked

    def too_large(self, request: Request) -> HTMLResponse:
        message = f"A console form is at most {MAX_FORM_BYTES} bytes. Nothing was changed."
        return self.render(request, "error.html", 413, title="Too large", message=message)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(lambda: fn(*args, **kwargs))

    # --- login ---------------------------------------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        return self.render(request, "login.html", next=_safe_next(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        try:
            data = await self.form(request)
        except BodyTooLarge:
            return self.too_large(request)
        except BodyTimeout:
            return self.render(request, "login.html", 408, error="The form did not arrive in time.")
        except CsrfError:
            return self.render(request, "login.html", 403, error="The form expired: please try again.")
        assert self.password is not None  # the app is not mounted without one
        rt = self.core.runtime
        failures_key = rt.keys.console("fails", self.core.client(request))
        failures = int(await self.run(rt.redis.get, failures_key) or 0)
        if failures >= LOGIN_FAILURES:
            log.warning("console_login_throttled")
            return self.render(request, "login.html", 429, error="Too many failed logins: wait a few minutes.")
        user_ok = hmac.compare_digest(data.get("user", "").encode(), self.user.encode())
        password_ok = hmac.compare_digest(data.get("password", "").encode(), self.password.get_secret_value().encode())
        if not (user_ok and password_ok):
            log.warning("console_login_refused")
            await self.run(_count_failure, rt, failures_key)
            return self.render(request, "login.html", 401, error="Wrong user or password.",
                               next=_safe_next(data.get("next")))  # fmt: skip
        await self.start_session(request)
        log.info("console_login", user=self.user)
        return RedirectResponse(_safe_next(data.get("next")), 303)

    async def logout(self, request: Request) -> Response:
        await self.form(request)
        await self.end_session(request)
        return RedirectResponse("/console/login", 303)

    # --- pages ---------------------------------------------------------------------------------
    async def fleet(self, request: Request) -> Response:
        return self.render(request, "fleet.html", **await self.run(pages.fleet, self.core.runtime))

    async def counters(self, request: Request) -> Response:
        sort = request.query_params.get("sort", "health")
        return self.render(request, "counters.html", **await self.run(pages.counters, self.core.runtime, sort))

    async def counter(self, request: Request) -> Response:
        text = request.path_params["counter"]
        if not text.isdigit() or int(text) <= 0:
            return self.render(
                request, "error.html", 422, title="Bad counter", message="counter must be a positive integer"
            )
        number = account_page.page_number(request.query_params.get("page"))
        held = account_page.page_number(request.query_params.get("held_page"))
        return self.render(
            request, "counter.html", **await self.run(pages.counter, self.core.runtime, int(text), number, held)
        )

    async def account(self, request: Request) -> Response:
        account_id = request.path_params["account"]
        number = account_page.page_number(request.query_params.get("page"))
        found = await self.run(account_page.account, self.core.runtime, account_id, number, pages.when)
        if found is None:
            return self.render(request, "error.html", 404, title="No such client", message="no client has that id")
        return self.render(request, "account.html", **found)

    async def calls(self, request: Request) -> Response:
        provider = request.query_params.get("provider", "").strip()
        call_id = request.query_params.get("call_id", "").strip()
        context = await self.run(pages.call, self.core.runtime, provider, call_id)
        return self.render(request, "call.html", provider=provider, call_id=call_id, **context)

    async def quarantine(self, request: Request) -> Response:
        return self.render(request, "quarantine.html", **await self.run(pages.quarantine, self.core.runtime))

    async def replay(self, request: Request) -> Response:
        await self.form(request)
        batch_id = request.path_params["batch"]
        who = f"console:{request.session['user']}"
        try:
            result = await self.run(replay, self.core.runtime, batch_id, who=who)
        except QuarantineError as error:
            request.session["flash"] = {"error": True, "text": str(error)}
            return RedirectResponse("/console/quarantine", 303)
        if result.new_batch_id:
            sent = await self.run(pages.send_upload, self.core.settings, result.new_batch_id)
            text = f"{batch_id} was sent again as {result.new_batch_id}" + (
                "" if sent else " (upload queued by the sweeper)"
            )
        else:
            text = f"{batch_id} was found at Metrica and adopted as upload {result.upload_id}"
        request.session["flash"] = {"error": False, "text": text}
        return RedirectResponse("/console/quarantine", 303)

    async def discard(self, request: Request) -> Response:
        data = await self.form(request)
        batch_id = request.path_params["batch"]
        reason = data.get("reason", "").strip()
        if not reason or len(reason) > 500:
            request.session["flash"] = {"error": True, "text": "reason: 1 to 500 characters are required"}
            return RedirectResponse("/console/quarantine", 303)
        try:
            await self.run(discard, self.core.runtime, batch_id, who=f"console:{request.session['user']}", why=reason)
        except QuarantineError as error:
            request.session["flash"] = {"error": True, "text": str(error)}
            return RedirectResponse("/console/quarantine", 303)
        request.session["flash"] = {"error": False, "text": f"{batch_id} was discarded"}
        return RedirectResponse("/console/quarantine", 303)

    def app(self) -> Starlette | None:
        if self.password is None:
            return None
        s = self.core.settings
        key = hmac.new(self.password.get_secret_value().encode(), b"calltrack-console-session", hashlib.sha256)
        p = self.page
        routes = [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", p(self.logout, post=True), methods=["POST"]),
            Route("/", p(self.fleet), methods=["GET"]),
            Route("/counters", p(self.counters), methods=["GET"]),
            Route("/counters/{counter}", p(self.counter), methods=["GET"]),
            Route("/accounts/{account}", p(self.account), methods=["GET"]),
            Route("/calls", p(self.calls), methods=["GET"]),
            Route("/quarantine", p(self.quarantine), methods=["GET"]),
            Route("/quarantine/{batch}/replay", p(self.replay, post=True), methods=["POST"]),
            Route("/quarantine/{batch}/discard", p(self.discard, post=True), methods=["POST"]),
        ]
        session = Middleware(
            SessionMiddleware,
            secret_key=key.hexdigest(),
            session_cookie="calltrack_console",
            max_age=s.console_session_seconds,
            path="/console",
            same_site="strict",
            https_only=s.console_secure_cookie,
        )
        return Starlette(routes=routes, middleware=[session])


def _count_failure(rt: Any, key: str) -> None:
    pipe = rt.redis.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, LOGIN_WINDOW_SECONDS, nx=True)
    pipe.execute()


class CsrfError(Exception):
    """A POST without the session's CSRF token."""


def _safe_next(value: str | None) -> str:
    """Only a console path: never an open redirect."""
    if value and value.startswith("/console/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/console/"
