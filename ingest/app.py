"""The ingestion service (Starlette, ASGI): provider webhooks and the generic JSON API in, calls to Redis.

The app is assembled here from its routers (``ingest/routes/``) over one shared core
(``ingest/core.py``: runtime, intake, answers, guards). Stateless: run any number of instances.

Routes::

    GET  /healthz                           liveness                         routes/operations.py
    GET  /readyz                            Redis reachable
    GET  /metrics                           Prometheus metrics of the whole deployment (worker/ops/metrics.py)
    POST /v1/calls                          one generic JSON call            routes/api.py
    POST /v1/calls/bulk                     NDJSON, one call per line; a per-line report
    POST /v1/conversions                    one offline conversion (JSON)
    POST /v1/conversions/bulk               NDJSON, one conversion per line; a per-line report
    POST /v1/chats                          one chat (JSON): the third upload kind
    POST /v1/chats/bulk                     NDJSON, one chat per line; a per-line report
    POST /v1/calls/{provider}/{call_id}/conversions   a conversion for an earlier call
    GET|POST|OPTIONS /v1/number             the session API: a tracking number for a visitor (CORS)
    POST /v1/number/release                 the visitor left: the lease ends soon    routes/sessions.py
    GET  /tag.js                            the site tag (cacheable, versioned)      routes/tag.py
    POST /twilio/voice                      status callbacks and <Dial action> requests   routes/providers.py
    GET  /zadarma/{account}?zd_echo=X       Zadarma's URL check
    POST /zadarma/{account}                 Zadarma notifications
    POST /mango/{account}/events/{kind}     Mango Office events (summary becomes a call)
    POST /mango/{account}/ping              Mango Office availability check
    /admin/v1/accounts, /admin/v1/counters  the account registry's admin API (bearer token)   routes/admin.py
    GET  /oauth/callback                    OAuth onboarding: Yandex ID sends the browser back here
    GET  /v1/calls/{provider}/{call_id}     where a call is (status API, bearer token)   routes/status.py
    GET  /v1/conversions/{source}/{id}, /v1/chats/{source}/{id}   the same for conversions and chats
    GET  /v1/counters/{id}[/uploads]        a counter's figures, its uploads (paged)
    GET  /openapi.json                      the status API's OpenAPI document            routes/openapi.py
    /console/...                            the operator console (login, sessions, CSRF)  console/app.py
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import structlog
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Mount

from config.settings import Settings
from ingest.console.app import Console
from ingest.core import IngestCore
from ingest.routes.admin import AdminRoutes
from ingest.routes.api import ApiRoutes
from ingest.routes.operations import OperationsRoutes
from ingest.routes.providers import ProviderRoutes
from ingest.routes.sessions import SessionService
from ingest.routes.status import StatusRoutes
from ingest.routes.tag import TagRoutes
from worker.accounts.envimport import start
from worker.errors import CalltrackError
from worker.runtime import Runtime

log = structlog.get_logger(__name__)


def import_env_accounts(core: IngestCore) -> None:
    """Today's CALLTRACK_* provider secrets and counter tokens become the ``env`` account (idempotent);
    the environment tokens' logins are learned and unreadable accounts named (worker/accounts/envimport.py)."""
    try:
        start(core.runtime.accounts, core.settings)
    except (CalltrackError, RedisError) as error:
        log.error("env_accounts_import_failed", error=type(error).__name__)


def create_app(settings: Settings, runtime: Runtime | None = None) -> Starlette:
    """The ASGI application. Owns the runtime it creates (closed at shutdown), not one passed in."""
    core = IngestCore(settings, runtime)
    routes: list[BaseRoute] = [
        *OperationsRoutes(core).routes(),
        *ApiRoutes(core).routes(),
        *SessionService(settings, core).routes(),
        *TagRoutes().routes(),
        *ProviderRoutes(core).routes(),
        *AdminRoutes(core).routes(),
        *StatusRoutes(core).routes(),
    ]
    console = Console(core).app()  # None (404) without a console password (no other credential opens it)
    if console is not None:
        routes.append(Mount("/console", app=console))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(import_env_accounts, core)
        yield
        await core.runtime.aclose()  # the event loop's redis.asyncio client (worker/runtime.py)
        if runtime is None:
            core.runtime.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = core
    return app
