"""Liveness, readiness and the deployment's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingest.core import IngestCore, json_response
from worker.ops import scrape


class OperationsRoutes:
    """``/healthz``, ``/readyz`` and ``/metrics`` (worker/ops/scrape.py)."""

    def __init__(self, core: IngestCore) -> None:
        self.core = core
        self.registry = scrape.registry(core.runtime.redis, core.runtime.keys, core.settings)

    async def healthz(self, _request: Request) -> Response:
        return json_response({"status": "ok"})

    async def metrics(self, _request: Request) -> Response:
        await run_in_threadpool(self.core.runtime.metrics.flush)  # this process's own counts, up to now
        body = await run_in_threadpool(scrape.render, self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def readyz(self, _request: Request) -> Response:
        try:
            await run_in_threadpool(self.core.runtime.redis.ping)
        except RedisError as error:
            return json_response({"status": "unavailable", "redis": type(error).__name__}, 503)
        return json_response({"status": "ready"})

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]
