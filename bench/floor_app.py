"""The floors of issue 26: the least an ingestion endpoint can do, served by uvicorn as the service is.

``uvicorn bench.floor_app:app --http httptools`` (``BENCH_FLOOR_REDIS_URL``, ``BENCH_FLOOR_STREAM``):

* ``POST /v1/calls``: one JSON parse (orjson) and one ``XADD`` through ``redis.asyncio``: the floor of
  a single-call request;
* ``POST /v1/calls/bulk``: NDJSON parsed line by line, one pipelined ``XADD`` per line, one round trip:
  the floor of a bulk request;
* ``GET /readyz``: for the harness's start-up wait.

No validation, no routing, no dedup, no metrics: the ingestion section's figures are printed as a share
of these, measured in the same run with the same load generator and the same number of processes.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

STREAM = os.environ.get("BENCH_FLOOR_STREAM", "benchfloor:stream")
ACCEPTED = b'{"accepted":1}'
JSON = "application/json"


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.redis = Redis.from_url(os.environ["BENCH_FLOOR_REDIS_URL"])
    yield
    await app.state.redis.aclose()


async def single(request: Request) -> Response:
    body = await request.body()
    orjson.loads(body)
    await request.app.state.redis.xadd(STREAM, {"d": body})
    return Response(ACCEPTED, status_code=202, media_type=JSON)


async def bulk(request: Request) -> Response:
    body = await request.body()
    lines = [line for line in body.split(b"\n") if line]
    for line in lines:
        orjson.loads(line)
    pipe = request.app.state.redis.pipeline(transaction=False)
    for line in lines:
        pipe.xadd(STREAM, {"d": line})
    await pipe.execute()
    return Response(b'{"accepted":%d}' % len(lines), status_code=202, media_type=JSON)


async def ready(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(
    routes=[
        Route("/v1/calls", single, methods=["POST"]),
        Route("/v1/calls/bulk", bulk, methods=["POST"]),
        Route("/readyz", ready, methods=["GET"]),
    ],
    lifespan=lifespan,
)
