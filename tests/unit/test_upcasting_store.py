"""Stored events leave the store at their current shape (conveyor/eventstore/upcasting.py):
ItemAdded v1 (no currency) as v2 in the shop's default currency, before anything folds,
projects or publishes it; a version this code does not know is never passed on."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from conveyor.aggregates.orders import ORDERS
from conveyor.application.commands import CommandEnvelope, CommandHandler
from conveyor.application.history import aggregate_history
from conveyor.bootstrap import configured_aggregates, upcasting
from conveyor.eventstore.memory import InMemoryEventStore
from conveyor.eventstore.port import NO_STREAM, NewEvent
from conveyor.eventstore.upcasting import UnreadableStoredEvent
from conveyor.settings import Settings
from domain.orders.commands import AddItem, ConfirmOrder

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def stored(type_: str, data: dict[str, object], schema_version: int = 1) -> NewEvent:
    return NewEvent(uuid.uuid4(), type_, data, T0, schema_version, {"command_id": "c"})


async def old_order(store: InMemoryEventStore, order_id: str = "o-1") -> None:
    await store.append(
        f"order-{order_id}",
        NO_STREAM,
        [
            stored("OrderCreated", {"customer_id": "alice"}),
            stored("ItemAdded", {"sku": "SKU-1", "quantity": 2, "unit_price": "9.99"}),
        ],
    )


async def test_v1_item_added_is_read_as_v2_in_the_default_currency() -> None:
    raw = InMemoryEventStore()
    await old_order(raw)
    store = upcasting(raw, Settings(default_currency="GBP"))
    (_, added) = await store.read_stream("order-o-1")
    assert added.schema_version == 2
    assert added.data == {"sku": "SKU-1", "quantity": 2, "unit_price": "9.99", "currency": "GBP"}
    assert (await store.read_all())[1] == added
    # the stored event itself is never changed
    assert (await raw.read_stream("order-o-1"))[1].data == {
        "sku": "SKU-1",
        "quantity": 2,
        "unit_price": "9.99",
    }
    history = await aggregate_history(store, ORDERS, "o-1")
    assert history.state.currency == "GBP"
    assert history.state.total == 2 * Decimal("9.99")


async def test_commands_fold_old_events_and_keep_their_currency() -> None:
    raw = InMemoryEventStore()
    await old_order(raw)
    store = upcasting(raw, Settings(default_currency="GBP"))
    handler = CommandHandler(store, configured_aggregates(Settings()))
    outcome = await handler.handle(
        CommandEnvelope(ConfirmOrder("o-1"), "c-confirm", "c-confirm", "c-confirm")
    )
    assert outcome.status == "accepted"
    confirmed = (await store.read_stream("order-o-1"))[-1]
    assert confirmed.data == {"total": "19.98"}


async def test_a_future_schema_version_is_refused_naming_the_event() -> None:
    raw = InMemoryEventStore()
    await old_order(raw)
    future = stored(
        "ItemAdded", {"sku": "SKU-2", "quantity": 1, "price": {"amount": "1"}}, schema_version=3
    )
    await raw.append("order-o-1", 2, [future])
    store = upcasting(raw, Settings())
    for read in (store.read_stream("order-o-1"), store.read_all()):
        with pytest.raises(UnreadableStoredEvent) as caught:
            await read
        message = str(caught.value)
        assert str(future.event_id) in message
        assert "'order-o-1'" in message
        assert "version 3," in message
        assert "'ItemAdded'" in message
        assert "schema version 3" in message
    handler = CommandHandler(store, configured_aggregates(Settings()))
    with pytest.raises(UnreadableStoredEvent):
        await handler.handle(
            CommandEnvelope(AddItem("o-1", "SKU-3", 1, Decimal("1")), "c-add", "c-add", "c-add")
        )
    assert len(await raw.read_stream("order-o-1")) == 3  # nothing appended


async def test_streams_and_types_it_does_not_know_pass_through() -> None:
    raw = InMemoryEventStore()
    foreign = stored("ItemAdded", {"anything": 1}, schema_version=9)
    await raw.append("billing-7", NO_STREAM, [foreign])
    await raw.append("order-x", NO_STREAM, [stored("CommandRejected", {"r": 1}, 4)])
    store = upcasting(raw, Settings())
    assert [e.data for e in await store.read_all()] == [{"anything": 1}, {"r": 1}]
