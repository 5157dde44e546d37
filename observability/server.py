"""The operations endpoint every worker process serves (CONVEYOR_OPS_HOST/PORT):

GET /metrics        Prometheus text format (the process's default registry)
GET /health/live    200 while the process's event loop answers
GET /health/ready   200 when ready, 503 otherwise; JSON naming each check's result
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from observability.health import Readiness


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


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside a worker process: the host owns SIGINT/SIGTERM, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class OpsServer:
    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], port: int) -> None:
        self._server = server
        self._task = task
        self.port = port

    @classmethod
    async def start(
        cls, host: str, port: int, readiness: Callable[[], Awaitable[Readiness]]
    ) -> OpsServer:
        config = uvicorn.Config(
            create_ops_app(readiness),
            log_config=None,  # uvicorn's lines go through the process's own handlers
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        server = _EmbeddedServer(config)
        # Bind here rather than in uvicorn: uvicorn answers a taken port with sys.exit().
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(
                f"cannot serve metrics and health on {host}:{port}: {exc.strerror} "
                "(set CONVEYOR_OPS_PORT, or 0 for any free port)"
            ) from None
        sock.listen(64)
        sock.setblocking(False)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="ops-http")
        while not server.started:
            if task.done():
                await task
                raise OSError(f"the metrics and health server on {host}:{port} did not start")
            await asyncio.sleep(0.01)
        return cls(server, task, int(sock.getsockname()[1]))

    async def stop(self, within: float = 5.0) -> None:
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, within)
