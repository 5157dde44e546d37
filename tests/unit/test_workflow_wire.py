"""The process manager's wire: every command it can send is one its target aggregate's
command parser accepts (same command, same id), and the integration events it reacts to
are read as the right workflow inputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from conveyor.aggregates import AGGREGATES
from conveyor.bootstrap import process_manager_bindings
from conveyor.workflows.facts import InvalidInput, PendingConfirmation, parse_input
from conveyor.workflows.sending import command_body
from domain.fulfilment.events import (
    FulfilmentCancelled,
    FulfilmentCompleted,
    FulfilmentRequested,
    FulfilmentStarted,
    FulfilmentWithdrawn,
    LatePaymentRefunded,
    PaymentRequestIssued,
)
from domain.fulfilment.inputs import (
    FulfilmentLine,
    OrderCancelled,
    OrderFulfilled,
    PaymentDeclined,
    ReservationRefused,
    StockReserved,
)
from domain.fulfilment.outgoing import commands_for
from messaging.command_messages import parse_command

AT = "2026-12-01T10:00:00+00:00"
EVENTS = [
    FulfilmentStarted("e1", (FulfilmentLine("SKU-1", 2),), Decimal("5.00"), "EUR", AT, AT, 900),
    PaymentRequestIssued("e2", Decimal("5.00"), "EUR", AT),
    FulfilmentCompleted("e3", ("SKU-1",), ("SKU-9",), AT),
    FulfilmentCancelled("e4", "payment declined: no", ("SKU-1",), True, AT),
    LatePaymentRefunded("e5", AT),
    FulfilmentRequested("e6", AT),
    FulfilmentWithdrawn("e7", "customer changed mind", ("SKU-1",), True, AT),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_command_the_workflow_sends_is_accepted_by_its_aggregate(event: object) -> None:
    commands = commands_for("o-1", event)  # type: ignore[arg-type]
    assert commands
    for outgoing in commands:
        definition = AGGREGATES.of_command_type(outgoing.command_type)
        assert definition is not None
        body = json.dumps(command_body(outgoing)).encode()
        envelope = parse_command(body, aggregate=definition)
        assert envelope.command_id == outgoing.command_id
        assert envelope.command == outgoing.command


def _event(type_: str, **fields: object) -> bytes:
    return json.dumps(
        {"event_id": "ev-1", "type": type_, "occurred_at": AT, "version": 3, **fields}
    ).encode()


def test_integration_events_are_read_as_workflow_inputs() -> None:
    at = datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert parse_input(
        _event("OrderConfirmed", order_id="o-1", customer_id="c", data={"total": "5.00"}),
        max_bytes=10_000,
    ) == PendingConfirmation("ev-1", at, "o-1")
    reserved = _event(
        "StockReserved", aggregate_id="SKU-1", data={"order_id": "o-1", "quantity": 2}
    )
    assert parse_input(reserved, max_bytes=10_000) == StockReserved("ev-1", at, "o-1", "SKU-1", 2)
    refused = _event(
        "ReservationRefused",
        aggregate_id="SKU-1",
        data={"order_id": "o-1", "sku": "SKU-1", "requested": 3, "available": 1},
    )
    assert parse_input(refused, max_bytes=10_000) == ReservationRefused(
        "ev-1", at, "o-1", "SKU-1", "requested 3, available 1"
    )
    declined = _event("PaymentDeclined", aggregate_id="o-1", data={"reason": "no"})
    assert parse_input(declined, max_bytes=10_000) == PaymentDeclined("ev-1", at, "o-1", "no")
    cancelled = _event("OrderCancelled", order_id="o-1", customer_id="c", data={"reason": "r"})
    assert parse_input(cancelled, max_bytes=10_000) == OrderCancelled("ev-1", at, "o-1", "r")
    fulfilled = _event("OrderFulfilled", order_id="o-1", customer_id="c", data={})
    assert parse_input(fulfilled, max_bytes=10_000) == OrderFulfilled("ev-1", at, "o-1")
    assert parse_input(_event("ItemAdded", order_id="o-1"), max_bytes=10_000) is None


def test_the_process_manager_is_bound_to_the_orders_cancelled_and_fulfilled_keys() -> None:
    keys = process_manager_bindings()
    assert {"orders.confirmed", "orders.cancelled", "orders.fulfilled"} <= set(keys)
    with pytest.raises(InvalidInput):
        parse_input(b"{", max_bytes=10_000)
    with pytest.raises(InvalidInput):
        parse_input(_event("StockReserved", aggregate_id="SKU-1", data={}), max_bytes=10_000)
