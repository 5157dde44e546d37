"""Review of the rejection markers (issue 16.3) and the registry, on a real SQLite store:
interleavings that lose an effect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from conveyor.aggregates import AGGREGATES
from conveyor.application.commands import CommandEnvelope, CommandHandler, event_id_for
from conveyor.application.rejections import (
    COMMAND_REJECTED,
    COMMAND_REJECTED_SCHEMA_VERSION,
    StoredRejection,
    legacy_rejection_stream,
)
from conveyor.eventstore.port import NO_STREAM, NewEvent
from conveyor.eventstore.sqlite import SqliteEventStore
from domain.orders.commands import AddItem, CreateOrder
from messaging.customers import IntegrationMapper


def envelope(command: object, command_id: str) -> CommandEnvelope:
    return CommandEnvelope(command, command_id, "corr", command_id)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    event_store = await SqliteEventStore(tmp_path / "events.db").open()
    yield event_store
    await event_store.close()


async def test_an_order_created_after_many_rejections_keeps_its_customer_in_a_fresh_mapper(
    store: SqliteEventStore,
) -> None:
    """1000 commands for order o-1 are rejected before it is created (a client sending
    AddItem ahead of CreateOrder, each under its own command_id): 1000 markers, then
    OrderCreated at stream version 1001. A gateway that restarts (or whose cache evicted the
    order, or a rebuild catch-up / reconciler with its fresh mapper) looks the customer up
    from the store, scanning only the first 1000 stream events: all markers. It then skips
    every later event of the order for good ("does not start with OrderCreated"), and the
    projections never see them. The handler's own markers, written as it writes them."""
    stream = "order-o-1"
    now = datetime.now(UTC)
    markers = []
    for n in range(1000):
        command_id = f"early-{n}"
        rejection = StoredRejection(
            command_id=command_id,
            rule="OrderNotFound",
            reason="order 'o-1' does not exist",
            version=0,
            event_id=event_id_for(stream, command_id, 0),
        )
        markers.append(
            NewEvent(
                event_id=rejection.event_id,
                type=COMMAND_REJECTED,
                data=rejection.as_data(),
                occurred_at=now,
                schema_version=COMMAND_REJECTED_SCHEMA_VERSION,
                metadata={"command_id": command_id, "correlation_id": "c", "causation_id": "c"},
            )
        )
    await store.append(stream, NO_STREAM, markers)
    # the same state through the real handler: one more rejection proves the shape
    handler = CommandHandler(store, AGGREGATES)
    assert (
        await handler.handle(envelope(AddItem("o-1", "S", 1, Decimal("1.00")), "k"))
    ).status == ("rejected")
    assert (await handler.handle(envelope(CreateOrder("o-1", "alice"), "create"))).status == (
        "accepted"
    )
    added = await handler.handle(envelope(AddItem("o-1", "SKU", 2, Decimal("3.00")), "add"))
    assert (added.status, added.version) == ("accepted", 2)

    item_added = (await store.read_stream(stream))[-1]
    assert item_added.type == "ItemAdded"
    fresh = IntegrationMapper(store, AGGREGATES)  # the gateway after a restart
    public = await fresh.integration_event(item_added)
    assert fresh.skipped == 0, "ItemAdded v2 of o-1 was skipped: never published"
    assert public is not None
    assert (public.version, public.customer_id) == (2, "alice")


async def test_a_fresh_resend_of_a_command_rejected_in_the_oldest_record_stays_rejected(
    store: SqliteEventStore,
) -> None:
    """README: "Records written by earlier versions stay final". A command K rejected by the
    oldest version (its record in `rejections-o-1`, all of the order's in one stream), then
    the order is created, then the client resends K under the same command_id as a fresh
    message (no redelivered flag, no retry header: `seen_before` False) — the scenario issue
    16.3 names. The handler reads `rejections-o-1` only for deliveries seen before, so K is
    decided again against the new state and accepted: `rejected`, then `accepted`."""
    await store.append(
        legacy_rejection_stream("o-1"),
        NO_STREAM,
        [
            NewEvent(
                event_id=event_id_for("rejections-o-1", "k", 0),
                type=COMMAND_REJECTED,
                data={
                    "command_id": "k",
                    "rule": "OrderNotFound",
                    "reason": "order 'o-1' does not exist",
                    "order_version": 0,
                },
                occurred_at=datetime.now(UTC),
                metadata={"command_id": "k"},
            )
        ],
    )
    handler = CommandHandler(store, AGGREGATES)
    assert (await handler.handle(envelope(CreateOrder("o-1", "alice"), "create"))).status == (
        "accepted"
    )
    resent = await handler.handle(envelope(AddItem("o-1", "SKU", 1, Decimal("1.00")), "k"))
    assert resent.status == "rejected", "a recorded rejection was followed by an acceptance"
    assert [e.type for e in await store.read_stream("order-o-1")] == ["OrderCreated"]
