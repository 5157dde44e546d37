"""Queries over HTTP and the CLI, with the error cases, against read models built by the
real projection workers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import httpx
import pytest

from conveyor.settings import Settings
from tests.integration.test_cli import aconveyor, assert_one_line_error
from tests.integration.test_gateway import store_orders
from tests.integration.test_projections import read_models_settle
from tests.mongodb import READ_STORES, on_read_store
from workers.host import WorkerHost

pytestmark = pytest.mark.rabbitmq

StartWorker = Callable[..., Awaitable[WorkerHost]]


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """SQLite, or the read store a test's `settings` parameter names."""
    return on_read_store(settings, request)


@pytest.fixture
async def running(settings: Settings, start_worker: StartWorker) -> WorkerHost:
    await store_orders(settings.event_store, 30)  # o-0…o-29, customers customer-0…6
    host = await start_worker(settings, ("commands", "gateway", "projections", "http"))
    await read_models_settle(settings)
    return host


@pytest.mark.parametrize("settings", READ_STORES, indirect=True)
async def test_http_queries_and_their_errors(running: WorkerHost) -> None:
    base = f"http://127.0.0.1:{running.http_port}"
    async with httpx.AsyncClient(base_url=base) as http:
        order = (await http.get("/orders/o-1")).json()
        assert order["status"] == "confirmed"  # o-n with n % 3 != 0 are confirmed
        assert order["total"] == "19.98"
        assert order["items"] == [
            {"sku": "SKU-1", "quantity": 2, "unit_price": "9.99", "subtotal": "19.98"}
        ]
        missing = await http.get("/orders/nope")
        assert missing.status_code == 404
        assert missing.json() == {"detail": "order 'nope' not found"}

        customer = (await http.get("/customers/customer-1/orders")).json()
        assert customer["order_count"] == len([n for n in range(30) if n % 7 == 1])
        assert (await http.get("/customers/nobody/orders")).status_code == 404

        cancelled = (await http.get("/orders", params={"status": "cancelled"})).json()
        assert sorted(o["order_id"] for o in cancelled["orders"]) == sorted(
            f"o-{n}" for n in range(0, 30, 3)
        )
        mine = (
            await http.get("/orders", params={"status": "cancelled", "customer_id": "customer-0"})
        ).json()
        assert {o["customer_id"] for o in mine["orders"]} == {"customer-0"}
        assert (await http.get("/orders")).json() == {"orders": [], "count": 0}  # none pending
        ages = await http.get("/orders", params={"status": "cancelled", "older_than_seconds": 3600})
        assert ages.json()["count"] == 0  # all created just now

        for params in ({"status": "lost"}, {"limit": 0}, {"older_than_seconds": -1}):
            response = await http.get("/orders", params=params)
            assert response.status_code == 422
            assert "detail" in response.json()

        history = (await http.get("/orders/o-1/history", params={"as_of_version": 2})).json()
        assert history["state"]["version"] == 2
        assert history["state"]["status"] == "pending"
        assert [e["type"] for e in history["events"]] == ["OrderCreated", "ItemAdded"]
        first_at = history["events"][0]["occurred_at"]
        by_time = (await http.get("/orders/o-1/history", params={"as_of": first_at})).json()
        assert by_time["state"]["version"] == 1
        both = await http.get("/orders/o-1/history", params={"as_of_version": 1, "as_of": first_at})
        assert both.status_code == 422
        assert (await http.get("/orders/o-1/history", params={"as_of": "soon"})).status_code == 422
        assert (await http.get("/orders/nope/history")).status_code == 404


@pytest.mark.parametrize("settings", READ_STORES, indirect=True)
async def test_cli_queries(settings: Settings, running: WorkerHost) -> None:
    order = await aconveyor(settings, "query", "order", "o-2", "--json")
    assert order.returncode == 0, order.stderr
    assert json.loads(order.stdout)["status"] == "confirmed"
    text = await aconveyor(settings, "query", "order", "o-2")
    assert "confirmed" in text.stdout
    assert "SKU-1" in text.stdout

    customer = json.loads(
        (await aconveyor(settings, "query", "customer", "customer-2", "--json")).stdout
    )
    assert customer["customer_id"] == "customer-2"
    active = json.loads((await aconveyor(settings, "query", "active", "--json")).stdout)
    assert active == []
    text = await aconveyor(settings, "query", "active", "--customer", "customer-3")
    assert "0 pending order(s)" in text.stdout

    unknown = await aconveyor(settings, "query", "order", "nope")
    assert_one_line_error(unknown, "order 'nope' not found")


async def test_send_wait_reads_its_own_write(settings: Settings, running: WorkerHost) -> None:
    created = await aconveyor(
        settings, "send", '{"type":"CreateOrder","order_id":"ryw","customer_id":"me"}', "--wait"
    )
    assert created.returncode == 0, created.stderr
    outcome = json.loads(created.stdout)
    assert outcome["status"] == "accepted"
    assert outcome["read_model_caught_up"] is True
    # the read model already shows it: no polling needed by the caller
    order = json.loads((await aconveyor(settings, "query", "order", "ryw", "--json")).stdout)
    assert order["version"] == 1


async def test_send_wait_says_when_the_read_model_lags(
    settings: Settings, start_worker: StartWorker
) -> None:
    await start_worker(settings, ("commands",))  # no gateway, no projections
    result = await aconveyor(
        settings,
        "send",
        '{"type":"CreateOrder","order_id":"lag","customer_id":"me"}',
        "--wait",
        "--timeout",
        "1",
    )
    assert result.returncode == 0
    assert json.loads(result.stdout)["read_model_caught_up"] is False
    assert "did not reach version 1 within 1s" in result.stderr


async def test_cli_rebuild_switches_to_a_new_version(
    settings: Settings, running: WorkerHost
) -> None:
    result = await aconveyor(settings, "projections", "rebuild", "active_orders")
    assert result.returncode == 0, result.stderr
    assert "readers now use active_orders_v2" in result.stdout
    assert "150 events" in result.stdout
    await asyncio.sleep(0)
    await read_models_settle(settings)

    unknown = await aconveyor(settings, "projections", "rebuild", "nonsense")
    assert_one_line_error(unknown, "unknown projection 'nonsense'")
