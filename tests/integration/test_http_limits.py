"""The embedded HTTP servers (query API, metrics and health) bound what a client can hold,
and the query API answers nonsense parameters with 422, never 500. Real uvicorn on a real
socket; real SQLite stores."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from conveyor.embedded_http import serve_embedded


async def _ok(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def test_idle_connections_are_closed_and_the_server_keeps_answering() -> None:
    app = Starlette(routes=[Route("/health/live", _ok)])
    server, port, task = await serve_embedded(
        app, "127.0.0.1", 0, what="test", port_variable="X", task_name="t", header_seconds=0.5
    )
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(300):  # more than the server's connection limit
            idle.append(await asyncio.open_connection("127.0.0.1", port))
        idle[0][1].write(b"GET /health/live HTTP/1.1\r\nHo")  # a request head, trickling
        # The server closes every one of them: EOF, not a hang.
        closed = await asyncio.wait_for(
            asyncio.gather(*(reader.read() for reader, _ in idle)), timeout=10
        )
        assert all(data in (b"",) or data.startswith(b"HTTP/1.1 ") for data in closed)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            assert (await http.get("/health/live")).status_code == 200
    finally:
        for _, writer in idle:
            writer.close()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


@pytest.fixture
async def query_api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    from conveyor.bootstrap import open_event_store, open_read_store
    from conveyor.queries.http import create_app
    from conveyor.queries.service import OrderQueries
    from conveyor.readmodels.collections import ProjectionCollections
    from conveyor.settings import Settings
    from tests.integration.test_gateway import store_orders

    settings = Settings(
        event_store=str(tmp_path / "events.db"), read_store=str(tmp_path / "readmodels.db")
    )
    await store_orders(settings.event_store, 1)
    events, reads = await open_event_store(settings), await open_read_store(settings)
    app = create_app(OrderQueries(reads, ProjectionCollections(reads), events))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
    await events.close()
    await reads.close()


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/orders", {"status": "pending", "older_than_seconds": "inf"}),
        ("/orders", {"status": "pending", "older_than_seconds": "nan"}),
        ("/orders", {"status": "pending", "older_than_seconds": "1e300"}),
        ("/orders/o-0/history", {"as_of_version": "1e26"}),
        ("/orders/o-0/history", {"as_of_version": str(10**26)}),
        ("/orders/o-0/history", {"as_of": "9999-12-31T23:59:59-01:00"}),
        ("/orders/o-0/history", {"as_of": "0001-01-01T00:00:00+01:00"}),
    ],
)
async def test_out_of_range_query_parameters_are_422_not_500(
    query_api: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    response = await query_api.get(path, params=params)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()


async def test_a_token_guards_queries_and_metrics_but_not_health(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.bootstrap import http_access, open_event_store, open_read_store
    from conveyor.observability.health import Readiness
    from conveyor.observability.server import OpsServer
    from conveyor.queries.http import serve
    from conveyor.readmodels.collections import ProjectionCollections
    from conveyor.settings import Settings
    from tests.integration.test_gateway import store_orders

    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    monkeypatch.setenv("CONVEYOR_HTTP_TOKEN_FILE", str(token_file))
    settings = Settings(
        event_store=str(tmp_path / "events.db"),
        read_store=str(tmp_path / "readmodels.db"),
        http_port=0,
        ops_port=0,
    )
    assert "s3cret-token" not in repr(settings)
    await store_orders(settings.event_store, 1)
    events, reads = await open_event_store(settings), await open_read_store(settings)

    async def ready() -> Readiness:
        return Readiness(ready=True, checks={})

    server, port, task = await serve(settings, events, reads, ProjectionCollections(reads))
    ops = await OpsServer.start("127.0.0.1", 0, ready, http_access(settings, settings.ops_host))
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            api, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops.port}"
            good = {"Authorization": "Bearer s3cret-token"}
            for url in (f"{api}/orders/o-0/history", f"{api}/orders", f"{metrics}/metrics"):
                assert (await http.get(url)).status_code == 401
                refused = await http.get(url, headers={"Authorization": "Bearer s3cret-tokeN"})
                assert refused.status_code == 401
                assert refused.headers["www-authenticate"] == "Bearer"
                assert (await http.get(url, headers=good)).status_code == 200
            assert (await http.get(f"{metrics}/health/live")).status_code == 200
            # DNS rebinding: a page served under another name reaching the loopback port
            rebound = await http.get(f"{api}/orders", headers={**good, "Host": "evil.example"})
            assert rebound.status_code == 400
            local = await http.get(f"{api}/orders", headers={**good, "Host": "localhost:1"})
            assert local.status_code == 200
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await ops.stop()
        await events.close()
        await reads.close()
