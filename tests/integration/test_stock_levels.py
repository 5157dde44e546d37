"""Stock levels end to end on each read store: inventory commands through the real command
worker, gateway and projection worker, read over HTTP and the CLI, read-your-writes with
`send --wait`, and `conveyor projections rebuild stock_levels` from the event store."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import httpx
import pytest

from conveyor.settings import Settings
from tests.integration.test_cli import aconveyor, assert_one_line_error
from tests.integration.test_projections import read_models, read_models_settle
from tests.mongodb import READ_STORES, on_read_store
from tests.rabbit import publish_many
from workers.host import WorkerHost

pytestmark = pytest.mark.rabbitmq

StartWorker = Callable[..., Awaitable[WorkerHost]]


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    return on_read_store(settings, request)


def inventory(type_: str, sku: str, n: int, **fields: object) -> dict[str, object]:
    return {"type": type_, "command_id": f"{type_}-{sku}-{n}", "sku": sku, **fields}


@pytest.mark.parametrize("settings", READ_STORES, indirect=True)
async def test_stock_levels_over_http_and_the_cli_and_rebuilt(
    settings: Settings, start_worker: StartWorker
) -> None:
    host = await start_worker(settings, ("commands", "gateway", "projections", "http"))
    received = [inventory("ReceiveStock", f"SKU-{n}", 0, quantity=10 * n) for n in range(1, 5)]
    await publish_many(settings.amqp_url, "inventory.commands", received)
    await read_models_settle(settings)
    reserved = [
        inventory("ReserveStock", "SKU-1", 1, order_id="o-1", quantity=7),
        inventory("ReserveStock", "SKU-1", 2, order_id="o-2", quantity=7),  # refused: 3 left
        inventory("ReserveStock", "SKU-2", 1, order_id="o-1", quantity=5),
        inventory("ReserveStock", "SKU-3", 1, order_id="o-3", quantity=28),
    ]
    await publish_many(settings.amqp_url, "inventory.commands", reserved)
    await read_models_settle(settings)
    commit = '{"type":"CommitReservation","sku":"SKU-2","order_id":"o-1","command_id":"ship"}'
    shipped = await aconveyor(settings, "send", commit, "--wait")
    assert shipped.returncode == 0, shipped.stderr
    assert json.loads(shipped.stdout)["read_model_caught_up"] is True  # read-your-writes

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{host.http_port}") as http:
        one = (await http.get("/stock/SKU-1")).json()
        assert (one["on_hand"], one["reserved"], one["available"]) == (10, 7, 3)
        assert (one["open_reservations"], one["refused_total"], one["version"]) == (1, 1, 3)
        two = (await http.get("/stock/SKU-2")).json()
        assert (two["on_hand"], two["reserved"], two["available"]) == (15, 0, 15)
        assert two["committed_total"] == 5
        low = (await http.get("/stock", params={"below": 5})).json()
        assert [(s["sku"], s["available"]) for s in low["stock"]] == [("SKU-3", 2), ("SKU-1", 3)]
        every = (await http.get("/stock")).json()
        assert [s["sku"] for s in every["stock"]] == ["SKU-3", "SKU-1", "SKU-2", "SKU-4"]
        assert (await http.get("/stock/nope")).status_code == 404
        assert (await http.get("/stock", params={"below": "x"})).status_code == 422

    text = await aconveyor(settings, "query", "stock", "--below", "5")
    assert text.returncode == 0, text.stderr
    assert "SKU-3" in text.stdout
    assert "SKU-1" in text.stdout
    assert "SKU-4" not in text.stdout
    as_json = json.loads((await aconveyor(settings, "query", "stock", "SKU-4", "--json")).stdout)
    assert (as_json["on_hand"], as_json["available"]) == (40, 40)
    assert_one_line_error(await aconveyor(settings, "query", "stock", "nope"), "'nope' not found")

    before = (await read_models(settings))["stock_levels"]
    rebuilt = await aconveyor(settings, "projections", "rebuild", "stock_levels")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "readers now use stock_levels_v2" in " ".join(rebuilt.stdout.split())
    after = (await read_models(settings))["stock_levels"]
    assert after == before  # the same documents, folded from the event store
    await read_models_settle(settings)
