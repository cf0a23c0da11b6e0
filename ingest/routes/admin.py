"""The admin HTTP API of the account registry (issue 15) and the OAuth onboarding callback.

Every ``/admin/v1/`` route needs ``Authorization: Bearer <CALLTRACK_ADMIN_API_TOKEN>``; without that
setting they answer 404. Answers never hold a secret (tokens appear as name, login, fingerprint).
Bad input is 422 with ``{"error", "errors": [{"field", "rule"}]}`` and stores nothing.

    GET    /admin/v1/accounts                       every account
    PUT    /admin/v1/accounts                       bulk sync {"accounts": [...]}: absent ones are removed
    POST   /admin/v1/accounts                       create one
    GET|PUT|PATCH|DELETE /admin/v1/accounts/{id}    show, create or replace, change fields, remove
    PUT    /admin/v1/accounts/{id}/tokens/{name}    add or rotate a token {"token", "refresh_token", "expires_at"}
    POST   /admin/v1/accounts/{id}/counters         add a counter {"id", "goal_name", ...}
    PUT|DELETE /admin/v1/accounts/{id}/telephony/{provider}/{name}   a telephony account {"secret", "timezone"}
    POST   /admin/v1/accounts/{id}/oauth            {"url"}: the link that onboards the account by OAuth
    GET    /admin/v1/accounts/{id}/keys             the client's API keys: name, prefix, scopes, dates (never a key)
    POST   /admin/v1/accounts/{id}/keys             a new key {"name", "scopes"}: the key is in this answer only
    POST   /admin/v1/accounts/{id}/keys/{name}/rotate   a new key for the name (answered once); the old one stops
    DELETE /admin/v1/accounts/{id}/keys/{name}      revoke a key
    GET    /admin/v1/counters                       every counter with its account and settings
    PATCH|DELETE /admin/v1/counters/{counter}       change or remove a counter
    GET    /admin/v1/problems                       refused, expired and near-expiry tokens, by account
    GET    /admin/v1/held                           held calls per reason and per client account
    DELETE /admin/v1/held/{entry_id}                delete one held call (404 when there is none)
    POST   /admin/v1/held/drop                      delete held calls matching {"reason", "counter", "older_than_days"}
    GET    /oauth/callback?code=&state=             Yandex ID sends the browser here (public; the state guards it)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from html import escape
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ingest.core import Handler, IngestCore, bearer_ok, error_response, json_response
from ingest.edge import read_body
from worker.accounts import edits, oauth
from worker.accounts.apikeys import ApiKeys
from worker.accounts.health import problems
from worker.accounts.model import AccountIn, parse
from worker.accounts.registry import Change, Registry
from worker.errors import AccountError, AccountInputError, OAuthError
from worker.intake.held import ENTRY_ID, REASONS, HeldCall


def _change(change: Change) -> dict[str, Any]:
    """The outcomes, and the tokens Yandex's user info refused or could not check (``token_checks``)."""
    checks = {"token_checks": change.checks} if change.checks else {}
    return {"outcomes": change.outcomes, **change.summary(), **checks}


class AdminRoutes:
    """The registry over HTTP; each handler runs the (blocking) registry in the thread pool."""

    def __init__(self, core: IngestCore) -> None:
        self.core = core
        self.settings = core.settings

    @property
    def reg(self) -> Registry:
        return self.core.runtime.accounts

    def _auth(self, handler: Handler) -> Handler:
        token = self.settings.admin_api_token

        async def checked(request: Request) -> Response:
            if token is None:
                return error_response(404, "the admin API is off: set CALLTRACK_ADMIN_API_TOKEN")
            given = request.headers.get("authorization", "")
            if not given:
                return error_response(401, "Authorization: Bearer <token> is required")
            if not bearer_ok(given, [token]):
                return error_response(403, "the bearer token is not valid")
            try:
                return await handler(request)
            except AccountInputError as error:
                body = {"error": str(error), "errors": [{"field": error.field, "rule": error.rule}]}
                return json_response(body, 422)
            except AccountError as error:
                return error_response(400, str(error))

        return checked

    async def _json(self, request: Request) -> Any:
        body = await read_body(request, self.settings.ingest_max_bulk_bytes)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise AccountInputError("body", "must be a JSON document") from None

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await run_in_threadpool(fn, *args)

    # --- accounts ------------------------------------------------------------------------------
    async def list_accounts(self, request: Request) -> Response:
        accounts = await self._run(self.reg.accounts)
        return json_response({"accounts": [a.public() for a in accounts]})

    async def sync(self, request: Request) -> Response:
        data = await self._json(request)
        if not isinstance(data, dict) or not isinstance(data.get("accounts"), list):
            raise AccountInputError("accounts", 'is required: {"accounts": [...]}')
        specs = []
        for i, item in enumerate(data["accounts"]):
            try:
                specs.append(parse(AccountIn, item))
            except AccountInputError as error:
                raise AccountInputError(f"accounts.{i}.{error.field}", error.rule) from None
        return json_response(_change(await self._run(self.reg.sync, specs)))

    async def create(self, request: Request) -> Response:
        change = await self._run(edits.create, self.reg, await self._json(request))
        return json_response(_change(change), 201)

    async def show(self, request: Request) -> Response:
        account = await self._run(self.reg.get, request.path_params["account"])
        if account is None:
            return error_response(404, "no such account")
        return json_response(account.public())

    async def put(self, request: Request) -> Response:
        data = await self._json(request)
        if isinstance(data, dict):
            data = {**data, "id": request.path_params["account"]}
        change = await self._run(self.reg.put, parse(AccountIn, data))
        return json_response(_change(change))

    async def patch(self, request: Request) -> Response:
        data = await self._json(request)
        if not isinstance(data, dict):
            raise AccountInputError("body", "must be a JSON object")
        return json_response(_change(await self._run(edits.update, self.reg, request.path_params["account"], data)))

    async def delete(self, request: Request) -> Response:
        return json_response(_change(await self._run(self.reg.remove, request.path_params["account"])))

    async def put_token(self, request: Request) -> Response:
        data = await self._json(request)
        if not isinstance(data, dict):
            raise AccountInputError("body", "must be a JSON object")
        data = {**data, "name": request.path_params["name"]}
        return json_response(_change(await self._run(edits.set_token, self.reg, request.path_params["account"], data)))

    async def put_telephony(self, request: Request) -> Response:
        data = await self._json(request)
        if not isinstance(data, dict):
            raise AccountInputError("body", "must be a JSON object")
        p = request.path_params
        data = {**data, "provider": p["provider"], "account": p["name"]}
        return json_response(_change(await self._run(edits.set_telephony, self.reg, p["account"], data)))

    async def delete_telephony(self, request: Request) -> Response:
        p = request.path_params
        change = await self._run(edits.remove_telephony, self.reg, p["account"], p["provider"], p["name"])
        return json_response(_change(change))

    async def add_counter(self, request: Request) -> Response:
        data = await self._json(request)
        change = await self._run(edits.add_counter, self.reg, request.path_params["account"], data)
        return json_response(_change(change), 201)

    async def onboarding_link(self, request: Request) -> Response:
        redirect = request.query_params.get("redirect_uri") or None
        account = request.path_params["account"]
        url = await self._run(lambda: oauth.start(self.reg, account, redirect_uri=redirect))
        return json_response({"url": url})

    # --- client API keys (issue 22) -------------------------------------------------------------
    @property
    def api_keys(self) -> ApiKeys:
        return self.core.tenancy.keys

    async def list_keys(self, request: Request) -> Response:
        found = await self._run(self.api_keys.listing, request.path_params["account"])
        return json_response({"keys": [k.public() for k in found]})

    async def create_key(self, request: Request) -> Response:
        data = await self._json(request)
        if not isinstance(data, dict):
            raise AccountInputError("body", 'must be a JSON object {"name", "scopes"}')
        if "scopes" not in data:
            raise AccountInputError("scopes", "is required: one or more of ingest, status")
        scopes, name = data["scopes"], data.get("name", "default")
        if not isinstance(scopes, (str, list)):
            raise AccountInputError("scopes", "must be a list or a comma-separated text of ingest, status")
        new = await self._run(self.api_keys.create, request.path_params["account"], scopes, name)
        return json_response(new.public(), 201, {"Cache-Control": "no-store"})

    async def rotate_key(self, request: Request) -> Response:
        p = request.path_params
        new = await self._run(self.api_keys.rotate, p["account"], p["name"])
        return json_response(new.public(), headers={"Cache-Control": "no-store"})

    async def revoke_key(self, request: Request) -> Response:
        p = request.path_params
        old = await self._run(self.api_keys.revoke, p["account"], p["name"])
        return json_response({"revoked": old.name, "prefix": old.prefix})

    # --- counters, problems --------------------------------------------------------------------
    async def list_counters(self, request: Request) -> Response:
        accounts = await self._run(self.reg.accounts)
        counters = [{"account": a.id, **c.model_dump(exclude_none=True)} for a in accounts for c in a.counters]
        return json_response({"counters": sorted(counters, key=lambda c: c["id"])})

    def _counter_id(self, request: Request) -> int:
        text = request.path_params["counter"]
        if not text.isdigit() or int(text) <= 0:
            raise AccountInputError("counter", "must be a positive integer")
        return int(text)

    async def patch_counter(self, request: Request) -> Response:
        data = await self._json(request)
        if not isinstance(data, dict):
            raise AccountInputError("body", "must be a JSON object")
        return json_response(_change(await self._run(edits.update_counter, self.reg, self._counter_id(request), data)))

    async def delete_counter(self, request: Request) -> Response:
        return json_response(_change(await self._run(edits.remove_counter, self.reg, self._counter_id(request))))

    async def problems(self, request: Request) -> Response:
        rt = self.core.runtime
        found = await self._run(problems, rt.redis, rt.keys, self.settings.token_warning_days)
        return json_response({"problems": [asdict(p) for p in found]})

    # --- held calls ------------------------------------------------------------------------------
    async def held_stats(self, request: Request) -> Response:
        held = self.core.intake.held
        per_reason, per_account, count = await self._run(lambda: (held.per_reason(), held.per_account(), held.count()))
        return json_response({"held": count, "per_reason": per_reason, "per_account": per_account})

    async def drop_held_one(self, request: Request) -> Response:
        entry_id = request.path_params["entry_id"]
        if not ENTRY_ID.fullmatch(entry_id):
            raise AccountInputError("entry_id", "must be a held entry id like 1718000000000-0")
        removed = await self._run(self.core.intake.held.drop_ids, [entry_id])
        if not removed:
            return error_response(404, f"no held call with id {entry_id}")
        return self._dropped(removed)

    async def drop_held(self, request: Request) -> Response:
        data = await self._json(request)
        if not isinstance(data, dict):
            raise AccountInputError("body", "must be a JSON object")
        for name in data:
            if name not in ("reason", "counter", "older_than_days"):
                raise AccountInputError(name, "is not a known filter (reason, counter, older_than_days)")
        reason, counter, days = data.get("reason"), data.get("counter"), data.get("older_than_days")
        if reason is not None and reason not in REASONS:
            raise AccountInputError("reason", f"must be one of {', '.join(REASONS)}")
        if counter is not None and (type(counter) is not int or counter <= 0):
            raise AccountInputError("counter", "must be a positive integer")
        if days is not None and (type(days) not in (int, float) or days < 0):
            raise AccountInputError("older_than_days", "must be a number of days, 0 or more")
        if reason is None and counter is None and days is None:
            raise AccountInputError("body", "must name at least one of reason, counter, older_than_days")
        removed = await self._run(
            lambda: self.core.intake.drop_held(reason=reason, counter=counter, older_than_days=days)
        )
        return self._dropped(removed)

    def _dropped(self, removed: list[HeldCall]) -> Response:
        self.core.runtime.metrics.held_dropped(e.reason for e in removed)
        entries = [{"id": e.entry_id, "reason": e.reason, "provider": e.call.provider} for e in removed]
        return json_response({"removed": len(removed), "entries": entries})

    # --- OAuth callback (public) ---------------------------------------------------------------
    async def callback(self, request: Request) -> Response:
        params = request.query_params
        if params.get("error"):
            return _page("Access was not granted", f"<p id='error'>{escape(params['error'])}</p>", 400)
        code, state = params.get("code", ""), params.get("state", "")
        if not code or not state:
            return _page("Onboarding failed", "<p id='error'>code and state are required</p>", 400)
        try:
            done = await self._run(oauth.finish, self.reg, code, state)
        except (OAuthError, AccountError) as error:
            return _page("Onboarding failed", f"<p id='error'>{escape(str(error))}</p>", 400)
        counters = "".join(f"<li class='counter'>{c.id}</li>" for c in done.account.counters)
        body = (
            f"<p>Account <b id='account'>{escape(done.account.id)}</b> is connected as Yandex login "
            f"<b id='login'>{escape(done.account.login or '?')}</b>.</p><ul id='counters'>{counters}</ul>"
        )
        if done.skipped:
            body += f"<p id='skipped'>Held by other accounts: {', '.join(str(c) for c in done.skipped)}</p>"
        return _page("Account connected", body)

    def routes(self) -> list[Route]:
        a, g = self._auth, self.core.guard
        base = "/admin/v1"
        return [
            Route(f"{base}/accounts", g(a(self.list_accounts)), methods=["GET"]),
            Route(f"{base}/accounts", g(a(self.sync)), methods=["PUT"]),
            Route(f"{base}/accounts", g(a(self.create)), methods=["POST"]),
            Route(f"{base}/accounts/{{account}}", g(a(self.show)), methods=["GET"]),
            Route(f"{base}/accounts/{{account}}", g(a(self.put)), methods=["PUT"]),
            Route(f"{base}/accounts/{{account}}", g(a(self.patch)), methods=["PATCH"]),
            Route(f"{base}/accounts/{{account}}", g(a(self.delete)), methods=["DELETE"]),
            Route(f"{base}/accounts/{{account}}/tokens/{{name}}", g(a(self.put_token)), methods=["PUT"]),
            Route(f"{base}/accounts/{{account}}/counters", g(a(self.add_counter)), methods=["POST"]),
            Route(
                f"{base}/accounts/{{account}}/telephony/{{provider}}/{{name}}",
                g(a(self.put_telephony)),
                methods=["PUT"],
            ),
            Route(
                f"{base}/accounts/{{account}}/telephony/{{provider}}/{{name}}",
                g(a(self.delete_telephony)),
                methods=["DELETE"],
            ),
            Route(f"{base}/accounts/{{account}}/oauth", g(a(self.onboarding_link)), methods=["POST"]),
            Route(f"{base}/accounts/{{account}}/keys", g(a(self.list_keys)), methods=["GET"]),
            Route(f"{base}/accounts/{{account}}/keys", g(a(self.create_key)), methods=["POST"]),
            Route(f"{base}/accounts/{{account}}/keys/{{name}}/rotate", g(a(self.rotate_key)), methods=["POST"]),
            Route(f"{base}/accounts/{{account}}/keys/{{name}}", g(a(self.revoke_key)), methods=["DELETE"]),
            Route(f"{base}/counters", g(a(self.list_counters)), methods=["GET"]),
            Route(f"{base}/counters/{{counter}}", g(a(self.patch_counter)), methods=["PATCH"]),
            Route(f"{base}/counters/{{counter}}", g(a(self.delete_counter)), methods=["DELETE"]),
            Route(f"{base}/problems", g(a(self.problems)), methods=["GET"]),
            Route(f"{base}/held", g(a(self.held_stats)), methods=["GET"]),
            Route(f"{base}/held/drop", g(a(self.drop_held)), methods=["POST"]),
            Route(f"{base}/held/{{entry_id}}", g(a(self.drop_held_one)), methods=["DELETE"]),
            Route("/oauth/callback", g(self.callback), methods=["GET"]),
        ]


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status)
