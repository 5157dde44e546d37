"""domain/codec.py with the new aggregates' and the workflow's events: through JSON and back."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from domain.codec import EventCodec, UnknownEventType, UnknownSchemaVersion
from domain.fulfilment import events as fulfilment
from domain.fulfilment.inputs import FulfilmentLine
from domain.inventory import events as inventory
from domain.orders import events as orders
from domain.payments import events as payments

LINES = (FulfilmentLine("SKU-A", 2), FulfilmentLine("SKU-B", 1))
AT = "2026-12-01T12:00:00+00:00"

SAMPLES: list[tuple[EventCodec[Any], object]] = [
    (orders.CODEC, orders.OrderFulfilled()),
    (inventory.CODEC, inventory.StockReceived(10)),
    (inventory.CODEC, inventory.StockReserved("order-1", 3)),
    (inventory.CODEC, inventory.ReservationRefused("order-1", "SKU-A", 5, 2)),
    (inventory.CODEC, inventory.ReservationReleased("order-1", 3)),
    (inventory.CODEC, inventory.ReservationCommitted("order-1", 3)),
    (payments.CODEC, payments.PaymentRequested(Decimal("19.90"), "EUR")),
    (payments.CODEC, payments.PaymentAuthorized(Decimal("19.90"), "psp-1")),
    (payments.CODEC, payments.PaymentDeclined("card expired")),
    (payments.CODEC, payments.PaymentRefunded(Decimal("0.10"), "order cancelled")),
    (
        fulfilment.CODEC,
        fulfilment.FulfilmentStarted("e1", LINES, Decimal("29.90"), "EUR", AT, AT, 900),
    ),
    (fulfilment.CODEC, fulfilment.StockReservationNoted("e2", "SKU-A", 2, AT)),
    (fulfilment.CODEC, fulfilment.ReservationRefusalNoted("e3", "SKU-B", "none left", AT)),
    (fulfilment.CODEC, fulfilment.PaymentAuthorizationNoted("e4", AT)),
    (fulfilment.CODEC, fulfilment.PaymentDeclineNoted("e5", "card expired", AT)),
    (fulfilment.CODEC, fulfilment.PaymentRequestIssued("e6", Decimal("29.90"), "EUR", AT)),
    (fulfilment.CODEC, fulfilment.FulfilmentCompleted("e7", ("SKU-A", "SKU-B"), (), AT)),
    (fulfilment.CODEC, fulfilment.FulfilmentCancelled("e8", "timed out", ("SKU-A",), True, AT)),
    (fulfilment.CODEC, fulfilment.LateReservationReleased("e9", "SKU-B", AT)),
    (fulfilment.CODEC, fulfilment.LatePaymentRefunded("e10", AT)),
    (fulfilment.CODEC, fulfilment.FulfilmentRequested("e11", AT)),
    (fulfilment.CODEC, fulfilment.OrderFulfilmentNoted("e12", AT)),
    (fulfilment.CODEC, fulfilment.OrderCancellationNoted("e13", "changed mind", AT)),
    (fulfilment.CODEC, fulfilment.FulfilmentWithdrawn("e14", "changed mind", ("SKU-A",), True, AT)),
]


@pytest.mark.parametrize(("codec", "event"), SAMPLES, ids=lambda v: type(v).__name__)
def test_every_event_round_trips_through_json(codec: EventCodec[Any], event: object) -> None:
    name = type(event).__name__
    stored = json.loads(json.dumps(codec.to_data(event)))  # what a store really keeps
    back = codec.from_data(name, codec.schema_version_of(event), stored)
    assert back == event
    assert repr(back) == repr(event)  # same Decimal exponent, tuples stay tuples


def test_every_event_type_is_sampled() -> None:
    for module in (inventory, payments, fulfilment):
        sampled = {type(event).__name__ for codec, event in SAMPLES if codec is module.CODEC}
        assert sampled == set(module.CODEC.event_types)


def test_amounts_are_exact_strings_and_lines_are_objects() -> None:
    started = fulfilment.FulfilmentStarted("e1", LINES, Decimal("29.90"), "EUR", AT, AT, 900)
    data = fulfilment.CODEC.to_data(started)
    assert data["total"] == "29.90"
    assert data["lines"] == [{"sku": "SKU-A", "quantity": 2}, {"sku": "SKU-B", "quantity": 1}]
    back = fulfilment.CODEC.from_data("FulfilmentStarted", 1, data)
    assert isinstance(back, fulfilment.FulfilmentStarted)
    assert isinstance(back.lines, tuple)
    assert isinstance(back.lines[0], FulfilmentLine)
    assert payments.CODEC.to_data(payments.PaymentRefunded(Decimal("0.10"), "r")) == {
        "amount": "0.10",
        "reason": "r",
    }


@pytest.mark.parametrize(
    ("codec", "event_type"),
    [
        (inventory.CODEC, "StockReserved"),
        (payments.CODEC, "PaymentAuthorized"),
        (fulfilment.CODEC, "FulfilmentStarted"),
        (orders.CODEC, "OrderFulfilled"),
    ],
)
def test_a_future_schema_version_is_refused(codec: EventCodec[Any], event_type: str) -> None:
    with pytest.raises(UnknownSchemaVersion, match="upgrade before reading it") as caught:
        codec.from_data(event_type, 2, {})
    assert caught.value.schema_version == 2
    assert caught.value.event_type == event_type


def test_another_codecs_event_type_is_unknown() -> None:
    with pytest.raises(UnknownEventType):
        inventory.CODEC.from_data(
            "PaymentAuthorized", 1, {"amount": "1", "provider_reference": "x"}
        )
