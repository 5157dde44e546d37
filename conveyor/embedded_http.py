"""An ASGI app served by uvicorn inside a worker process (the query API, the operations
endpoint): on a socket bound here, with uvicorn's log lines going through the process's own
logging configuration and its signals left to the worker."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_CONNECTIONS = 200
"""Connections plus in-flight requests per server; beyond it uvicorn answers 503."""
KEEP_ALIVE_SECONDS = 5
"""An idle keep-alive connection is closed after this long."""
HEADER_SECONDS = 10.0
"""A connection that has not sent a complete request head by then is closed: idle or
trickling connections cannot hold the server's slots (uvicorn has no such timeout)."""


class _HeaderTimeoutH11Protocol(H11Protocol):
    header_seconds = HEADER_SECONDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline = self.loop.call_later(self.header_seconds, self._no_request)

    def _no_request(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._header_deadline.cancel()
        super().connection_lost(exc)


OPEN_PATHS = ("/health/live", "/health/ready")
"""Answered without a token: the orchestrator's probes carry none."""


@dataclass(frozen=True, slots=True)
class HttpAccess:
    """Who may talk to an embedded server: the Host names it answers to (against DNS
    rebinding: a browser page must not reach a loopback server under its own name) and,
    when set, the bearer token every request but the health probes must carry."""

    allowed_hosts: tuple[str, ...] = ("*",)
    token: str | None = None


class BearerToken:
    """401 for a request without `Authorization: Bearer <token>` (compared in constant
    time), except on the open paths."""

    def __init__(self, app: ASGIApp, token: str, open_paths: tuple[str, ...] = OPEN_PATHS):
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = JSONResponse(
                    {"detail": "missing or wrong bearer token"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def guarded(app: ASGIApp, access: HttpAccess) -> ASGIApp:
    if access.token:
        app = BearerToken(app, access.token)
    return TrustedHostMiddleware(app, allowed_hosts=list(access.allowed_hosts))


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside a worker process: the host owns SIGINT/SIGTERM, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_embedded(
    app: Any,
    host: str,
    port: int,
    *,
    what: str,
    port_variable: str,
    task_name: str,
    backlog: int = 128,
    header_seconds: float = HEADER_SECONDS,
    access: HttpAccess | None = None,
) -> tuple[uvicorn.Server, int, asyncio.Task[None]]:
    """Serve `app` on host:port; returns once it is serving, with the server (set its
    `should_exit` to stop it), the bound port (port 0: any free one) and the serving task.

    `what` names the server and `port_variable` the setting that moves it, in the OSError
    raised when the port cannot be bound."""
    config = uvicorn.Config(
        guarded(app, access or HttpAccess()),
        log_config=None,  # uvicorn's lines go through the process's own handlers
        log_level="warning",
        access_log=False,
        lifespan="off",
        http=type(
            "HeaderTimeoutH11Protocol",
            (_HeaderTimeoutH11Protocol,),
            {"header_seconds": header_seconds},
        ),
        limit_concurrency=MAX_CONNECTIONS,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    server = _EmbeddedServer(config)
    # Bind here rather than in uvicorn: uvicorn answers a taken port with sys.exit().
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            f"cannot serve {what} on {host}:{port}: {exc.strerror} "
            f"(set {port_variable}, or 0 for any free port)"
        ) from None
    sock.listen(backlog)
    sock.setblocking(False)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=task_name)
    while not server.started:
        if task.done():
            await task
            raise OSError(f"the {what} server on {host}:{port} did not start")
        await asyncio.sleep(0.01)
    return server, int(sock.getsockname()[1]), task
