"""Liveness, readiness and the deployment's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingest.core import Handler, IngestCore, bearer, json_response
from ingest.edge import is_loopback_host
from worker.ops import scrape


class OperationsRoutes:
    """``/healthz``, ``/readyz`` and ``/metrics`` (worker/ops/scrape.py)."""

    def __init__(self, core: IngestCore) -> None:
        self.core = core
        self.registry = scrape.registry(core.runtime.redis, core.runtime.keys, core.settings)

    async def healthz(self, _request: Request) -> Response:
        return json_response({"status": "ok"})

    async def metrics(self, request: Request) -> Response:
        """Volumes, hostnames and quota left: behind ``ingest_metrics_token``, else for loopback clients only."""
        if self.core.settings.ingest_metrics_token is None and not is_loopback_host(self.core.client(request)):
            return json_response(
                {"error": "/metrics answers loopback clients only (set CALLTRACK_INGEST_METRICS_TOKEN)"}, 403
            )
        await run_in_threadpool(self.core.runtime.metrics.flush)  # this process's own counts, up to now
        body = await run_in_threadpool(scrape.render, self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def readyz(self, _request: Request) -> Response:
        try:
            await run_in_threadpool(self.core.runtime.redis.ping)
        except RedisError as error:
            return json_response({"status": "unavailable", "redis": type(error).__name__}, 503)
        return json_response({"status": "ready"})

    def _metrics_route(self) -> Handler:
        token = self.core.settings.ingest_metrics_token
        if token is None:
            return self.metrics
        return self.core.guard(bearer(token.get_secret_value(), self.metrics))

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self._metrics_route(), methods=["GET"]),
        ]
