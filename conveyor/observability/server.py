"""The operations endpoint every worker process serves (CONVEYOR_OPS_HOST/PORT):

GET /metrics        Prometheus text format (the process's default registry)
GET /health/live    200 while the process's event loop answers
GET /health/ready   200 when ready, 503 otherwise; JSON naming each check's result
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conveyor.embedded_http import HttpAccess, serve_embedded
from conveyor.observability.health import Readiness


def create_ops_app(readiness: Callable[[], Awaitable[Readiness]]) -> Starlette:
    async def metrics(_: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def live(_: Request) -> Response:
        return JSONResponse({"status": "live"})

    async def ready(_: Request) -> Response:
        result = await readiness()
        return JSONResponse(result.as_json(), status_code=200 if result.ready else 503)

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/health/live", live),
            Route("/health/ready", ready),
        ]
    )


class OpsServer:
    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], port: int) -> None:
        self._server = server
        self._task = task
        self.port = port

    @classmethod
    async def start(
        cls,
        host: str,
        port: int,
        readiness: Callable[[], Awaitable[Readiness]],
        access: HttpAccess | None = None,
    ) -> OpsServer:
        server, bound, task = await serve_embedded(
            create_ops_app(readiness),
            host,
            port,
            what="metrics and health",
            port_variable="CONVEYOR_OPS_PORT",
            task_name="ops-http",
            backlog=64,
            access=access,
        )
        return cls(server, task, bound)

    async def stop(self, within: float = 5.0) -> None:
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, within)
