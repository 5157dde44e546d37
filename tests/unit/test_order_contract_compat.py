"""Existing consumers keep working: with Order now one registered aggregate among others,
an `orders.commands` message and the `orders.*` integration events are exactly what they
were. The oracle is the checked-in JSON Schemas (docs/schemas) and bytes produced by the
code before the registry (commit bf658be), pinned here."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conveyor.aggregates import AGGREGATES
from conveyor.aggregates.orders import ORDERS
from conveyor.application.commands import CommandHandler
from conveyor.bootstrap import command_queue
from conveyor.eventstore.memory import InMemoryEventStore
from conveyor.eventstore.port import RecordedEvent
from conveyor.settings import Settings
from domain.orders.commands import AddItem, CreateOrder
from messaging.command_messages import parse_command
from messaging.customers import IntegrationMapper
from messaging.integration_events import encode

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
T = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
ENVELOPE = (
    '{{"event_id":"00000000-0000-0000-0000-00000000000{n}","schema_version":1,'
    '"order_id":"o-1","customer_id":"alice","version":{n},'
    '"occurred_at":"2026-11-27T10:00:00.123456Z","correlation_id":"corr-1",'
    '"causation_id":"cmd-1","type":"{type}","data":{data}}}'
)
# (type, stored data, routing key, data as published) — bytes from the pre-registry code,
# but for ItemAdded's `currency`: added since (schema version 2 of the stored event, an
# additive field of contract version 1), at the end of its data.
EVENTS = [
    ("OrderCreated", {"customer_id": "alice"}, "orders.created", '{"customer_id":"alice"}'),
    (
        "ItemAdded",
        {"sku": "SKU-1", "quantity": 2, "unit_price": "9.99", "currency": "EUR"},
        "orders.item-added",
        '{"sku":"SKU-1","quantity":2,"unit_price":"9.99","currency":"EUR"}',
    ),
    ("ItemRemoved", {"sku": "SKU-1"}, "orders.item-removed", '{"sku":"SKU-1"}'),
    ("OrderConfirmed", {"total": "19.98"}, "orders.confirmed", '{"total":"19.98"}'),
    (
        "OrderCancelled",
        {"reason": "changed my mind"},
        "orders.cancelled",
        '{"reason":"changed my mind"}',
    ),
]


def schema(relative: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / relative).read_text())
    return loaded


def stored(n: int, event_type: str, data: dict[str, Any]) -> RecordedEvent:
    return RecordedEvent(
        event_id=uuid.UUID(int=n),
        stream_id="order-o-1",
        version=n,
        position=10 + n,
        type=event_type,
        data=data,
        occurred_at=T,
        metadata={"command_id": "c", "correlation_id": "corr-1", "causation_id": "cmd-1"},
    )


async def test_orders_integration_events_are_byte_for_byte_what_they_were() -> None:
    mapper = IntegrationMapper(InMemoryEventStore(), AGGREGATES)
    for n, (event_type, data, routing_key, published) in enumerate(EVENTS, 1):
        event = await mapper.integration_event(stored(n, event_type, data))
        assert event is not None
        assert event.routing_key == routing_key
        body = encode(event)
        assert body == ENVELOPE.format(n=n, type=event_type, data=published).encode()
        # field for field what the checked-in schema says, in its order, and valid by it
        contract = schema(f"integration-events/{event_type}.v1.json")
        assert list(json.loads(body)) == list(contract["properties"])
        assert {"order_id", "customer_id", "version", "schema_version"} <= set(contract["required"])
        assert f"routing key {routing_key}." in contract["description"]
        jsonschema.Draft202012Validator(contract).validate(json.loads(body))


@pytest.mark.parametrize(
    ("status", "extra"),
    [("accepted", {}), ("rejected", {"reason": "no", "rule": "r"})],
)
def test_order_command_outcomes_are_byte_for_byte_what_they_were(
    status: str, extra: dict[str, str]
) -> None:
    from conveyor.application.commands import CommandOutcome

    outcome = CommandOutcome(
        command_id="c-1",
        status=status,  # type: ignore[arg-type]
        aggregate_id="o-1",
        version=3,
        id_field=ORDERS.id_field,
        routing_key_prefix=ORDERS.contract.routing_key_prefix,
        **extra,  # type: ignore[arg-type]
    )
    expected = {"command_id": "c-1", "status": status, "order_id": "o-1", "version": 3, **extra}
    assert json.dumps(outcome.as_message()) == json.dumps(expected)
    jsonschema.Draft202012Validator(schema("command-outcomes/CommandOutcome.json")).validate(
        outcome.as_message()
    )


async def test_an_orders_commands_message_is_read_as_it_always_was() -> None:
    settings = Settings(amqp_url="amqp://127.0.0.1/", command_queue="orders.commands")
    queue = command_queue(settings, ORDERS)
    assert (queue.name, queue.binding_key) == ("orders.commands", "orders.commands")
    body = {
        "type": "AddItem",
        "command_id": "cmd-7",
        "order_id": "o-1",
        "sku": "SKU-1",
        "quantity": 2,
        "unit_price": "9.99",
    }
    jsonschema.Draft202012Validator(schema("commands/Command.json")).validate(body)
    envelope = parse_command(json.dumps(body).encode(), aggregate=ORDERS)
    assert envelope.command == AddItem("o-1", "SKU-1", 2, Decimal("9.99"))
    assert (envelope.command_id, envelope.aggregate_id) == ("cmd-7", "o-1")
    # and its outcome goes out under the routing key consumers bind today
    store = InMemoryEventStore()
    handler = CommandHandler(store, AGGREGATES)
    created = parse_command(
        json.dumps({"type": "CreateOrder", "order_id": "o-1", "customer_id": "alice"}).encode(),
        aggregate=ORDERS,
        message_id="cmd-1",
    )
    assert created.command == CreateOrder("o-1", "alice")
    await handler.handle(created)
    outcome = await handler.handle(envelope)
    assert f"{outcome.routing_key_prefix}command.{outcome.status}" == "orders.command.accepted"
    assert outcome.as_message() == {
        "command_id": "cmd-7",
        "status": "accepted",
        "order_id": "o-1",
        "version": 2,
    }
