"""A customer's answer, gathered from customer_history's one-document-per-order read model
in a real SQLite read store: counts, the lifetime confirmed total, the orders in creation
order, paging through many orders."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from conveyor.queries import service
from conveyor.queries.service import OrderQueries
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.projections import CUSTOMER_HISTORY, fold
from conveyor.readmodels.sqlite import SqliteReadModelStore
from messaging.integration_events import IntegrationEvent
from tests.unit.test_projections import Clock, OrderEvents, at


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteReadModelStore]:
    read_store = await SqliteReadModelStore(tmp_path / "readmodels.db").open()
    yield read_store
    await read_store.close()


async def customer_answers(
    store: SqliteReadModelStore, events: list[IntegrationEvent]
) -> OrderQueries:
    collections = ProjectionCollections(store, cache_seconds=0)
    active = await collections.active(CUSTOMER_HISTORY.name)
    await store.ensure_collection(active.collection, CUSTOMER_HISTORY.indexes)
    await store.put_many(active.collection, fold(CUSTOMER_HISTORY, events))
    return OrderQueries(store, collections)


async def test_counts_and_lifetime_total_sum_over_the_customers_orders(
    store: SqliteReadModelStore,
) -> None:
    clock = Clock()
    events: list[IntegrationEvent] = []
    for n, (price, end) in enumerate(
        [("0.10", "confirm"), ("0.20", "confirm"), ("5.00", "cancel"), ("7.00", None)]
    ):
        order = OrderEvents(f"o-{n}", "c-1", clock)
        events += [order.created(), order.added("S", 3, price)]
        if end == "confirm":
            events.append(order.confirmed(str(Decimal(price) * 3)))
        elif end == "cancel":
            events.append(order.cancelled("no"))
    other = OrderEvents("o-x", "c-2", clock)
    events += [other.created(), other.added("S", 1, "9.00"), other.confirmed("9.00")]
    queries = await customer_answers(store, events)

    answer = await queries.customer("c-1")
    assert answer is not None
    assert answer["lifetime_confirmed_total"] == "0.90"  # 0.30 + 0.60, exactly
    assert (
        answer["order_count"],
        answer["pending_count"],
        answer["confirmed_count"],
        answer["cancelled_count"],
    ) == (4, 1, 2, 1)
    assert [o["order_id"] for o in answer["orders"]] == ["o-0", "o-1", "o-2", "o-3"]
    assert answer["orders"][3] == {
        "order_id": "o-3",
        "status": "pending",
        "total": "21.00",
        "version": 2,
        "created_at": answer["orders"][3]["created_at"],
        "updated_at": answer["orders"][3]["updated_at"],
        "lines": [{"sku": "S", "quantity": 3, "unit_price": "7.00"}],
    }
    assert answer["updated_at"] == max(at(e) for e in events if e.customer_id == "c-1")
    c2 = await queries.customer("c-2")
    assert c2 is not None
    assert [o["order_id"] for o in c2["orders"]] == ["o-x"]
    assert c2["lifetime_confirmed_total"] == "9.00"
    assert await queries.customer("nobody") is None


async def test_orders_are_listed_in_creation_order_whatever_arrived_first(
    store: SqliteReadModelStore,
) -> None:
    clock = Clock()
    a = OrderEvents("o-b", "c-1", clock)  # created first, though its id sorts second
    b = OrderEvents("o-a", "c-1", clock)
    a1, b1 = a.created(), b.created()
    queries = await customer_answers(store, [b1, a1])
    answer = await queries.customer("c-1")
    assert answer is not None
    assert [o["order_id"] for o in answer["orders"]] == ["o-b", "o-a"]


async def test_the_lifetime_total_pages_through_many_orders_sharing_creation_times(
    store: SqliteReadModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "PAGE", 4)
    clock = Clock()
    events: list[IntegrationEvent] = []
    for n in range(23):
        order = OrderEvents(f"o-{n:02}", "c-1", clock)
        created = order.created()
        if n % 3:  # pairs and triples of orders created at the same instant
            created = created.model_copy(update={"occurred_at": events[-3].occurred_at})
        events += [created, order.added("S", 1, "1.00"), order.confirmed("1.00")]
    queries = await customer_answers(store, events)
    answer = await queries.customer("c-1", limit=5)
    assert answer is not None
    assert answer["confirmed_count"] == 23
    assert answer["lifetime_confirmed_total"] == "23.00"
    assert len(answer["orders"]) == 5  # the most recent five, oldest of them first
    assert [o["order_id"] for o in answer["orders"]] == [f"o-{n:02}" for n in range(18, 23)]
