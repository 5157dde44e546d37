"""The rebuild's fast fold (`LogFold`) against the projections themselves: on any log it
accepts, its documents equal a fold of the integration events the current (validated)
mapping produces; whatever it refuses, it leaves untouched."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from conveyor.aggregates import AGGREGATES
from conveyor.eventstore.port import RecordedEvent
from conveyor.readmodels.applier import feeds
from conveyor.readmodels.projections import PROJECTIONS, LogFold, documents_json, fold
from conveyor.readmodels.sqlite import _encode
from messaging.customers import IntegrationMapper

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
PRICES = ("9.99", "0.50", "4.5", "10", "3.333", "0.005", "-1.25", "123456.789")
SKUS = ("BOOK", "MUG", "PEN")


class _Log:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.events: list[RecordedEvent] = []

    def add(self, stream: str, version: int, type_: str, data: dict[str, Any], **kw: Any) -> None:
        position = len(self.events) + 1
        self.events.append(
            RecordedEvent(
                event_id=UUID(int=self.rng.getrandbits(128)),
                stream_id=stream,
                version=version,
                position=position,
                type=type_,
                data=data,
                # Coarse steps: orders created in the same microsecond tie on created_at.
                occurred_at=EPOCH + timedelta(microseconds=self.rng.randrange(0, 50) * position),
                metadata=kw.get("metadata", {"correlation_id": f"c-{position}"}),
            )
        )


class _Stock:
    """Inventory histories the domain could write, interleaved with the orders' (and a
    payment stream now and then, which feeds no read model)."""

    def __init__(self, log: _Log) -> None:
        self.log = log
        self.version = dict.fromkeys(SKUS, 0)
        self.available = dict.fromkeys(SKUS, 0)
        self.held: dict[str, dict[str, int]] = {sku: {} for sku in SKUS}
        self.payments = 0

    def step(self) -> None:
        rng, sku = self.log.rng, self.log.rng.choice(SKUS)
        held = self.held[sku]
        order = f"o{rng.randrange(10)}"
        roll = rng.random()
        if roll < 0.25:
            event, data = "StockReceived", {"quantity": rng.randint(1, 20)}
            self.available[sku] += data["quantity"]
        elif roll < 0.6 and order not in held:
            quantity = rng.randint(1, 8)
            if quantity > self.available[sku]:
                event = "ReservationRefused"
                data = {
                    "order_id": order,
                    "sku": sku,
                    "requested": quantity,
                    "available": self.available[sku],
                }
            else:
                event, data = "StockReserved", {"order_id": order, "quantity": quantity}
                held[order] = quantity
                self.available[sku] -= quantity
        elif held:
            order = rng.choice(sorted(held))
            quantity = held.pop(order)
            if rng.random() < 0.5:
                event = "ReservationReleased"
                self.available[sku] += quantity
            else:
                event = "ReservationCommitted"
            data = {"order_id": order, "quantity": quantity}
        else:
            self.payments += 1
            self.log.add(
                f"payment-p{self.payments}",
                1,
                "PaymentRequested",
                {"amount": "1.00", "currency": "EUR"},
            )
            return
        self.version[sku] += 1
        self.log.add(f"inventory-{sku}", self.version[sku], event, data)


def random_log(seed: int, orders: int = 40) -> list[RecordedEvent]:
    """Interleaved order histories the projections accept, with everything odd that is
    still valid: confirm after cancel, cancel after confirm, removing an absent SKU, the
    same SKU twice, prices with three places, negative quantities, foreign streams and
    event types without a contract."""
    rng = random.Random(seed)
    log = _Log(rng)
    pending = {f"o{n}": 0 for n in range(orders)}
    status: dict[str, str] = {}
    stock = _Stock(log)
    while pending:
        order = rng.choice(sorted(pending))
        stream, version = f"order-{order}", pending[order] + 1
        if version == 1:
            customer = f"customer-{rng.randrange(5)}"
            log.add(stream, 1, "OrderCreated", {"customer_id": customer, "extra": 1})
            status[order] = "pending"
        else:
            choices = ["confirm", "cancel", "end"]
            if status[order] == "pending":
                choices += ["add", "add", "add", "remove"]
            if status[order] == "confirmed":
                choices += ["fulfil"]
            choice = rng.choice(choices)
            if choice == "end":
                del pending[order]
                continue
            if choice == "add":
                data = {
                    "sku": rng.choice(SKUS),
                    "quantity": rng.choice((1, 2, 3, 1000, -1)),
                    "unit_price": rng.choice(PRICES),
                }
                log.add(stream, version, "ItemAdded", data)
            elif choice == "remove":
                log.add(stream, version, "ItemRemoved", {"sku": rng.choice(SKUS)})
            elif choice == "fulfil":
                log.add(stream, version, "OrderFulfilled", {})
                status[order] = "fulfilled"
            elif choice == "confirm":
                log.add(stream, version, "OrderConfirmed", {"total": rng.choice(PRICES)})
                status[order] = "confirmed"
            else:
                log.add(stream, version, "OrderCancelled", {"reason": "changed mind"})
                status[order] = "cancelled"
        pending[order] = version
        if rng.random() < 0.4:
            stock.step()
        if rng.random() < 0.05:
            log.add("invoice-1", len(log.events), "InvoiceSent", {})
        if rng.random() < 0.05:
            log.add(stream, version, "NoteAdded", {"text": "not a contract type"})
    return log.events


async def validated_documents(events: list[RecordedEvent]) -> dict[str, dict[str, Any]]:
    """The current path: pydantic-validated integration events, folded by each projection."""
    directory = IntegrationMapper(store=None, aggregates=AGGREGATES)  # type: ignore[arg-type]  # never read
    mapped = [await directory.integration_event(event) for event in events]
    integration = [event for event in mapped if event is not None]
    return {p.name: fold(p, [e for e in integration if feeds(p.name, e)]) for p in PROJECTIONS}


def fast_documents(events: list[RecordedEvent]) -> dict[str, dict[str, Any]]:
    fast = LogFold()
    for event in events:
        if event.stream_id.startswith("order-") and event.type in {
            "OrderCreated",
            "ItemAdded",
            "ItemRemoved",
            "OrderConfirmed",
            "OrderCancelled",
            "OrderFulfilled",
        }:
            assert fast.add(event), event
        elif event.stream_id.startswith("inventory-"):
            assert fast.add_stock(event), event
    return {p.name: fast.documents(p.name) for p in PROJECTIONS}


@pytest.mark.parametrize("seed", range(30))
async def test_the_fast_fold_equals_the_projections_on_any_valid_log(seed: int) -> None:
    events = random_log(seed)
    assert fast_documents(events) == await validated_documents(events)


@pytest.mark.parametrize("seed", range(30))
def test_the_fast_folds_json_is_what_the_store_would_encode(seed: int) -> None:
    events = random_log(seed)
    fast = LogFold()
    for event in events:
        if event.stream_id.startswith("order-") and not event.type.endswith("Sent"):
            fast.add(event)
        elif event.stream_id.startswith("inventory-"):
            fast.add_stock(event)
    for order in list(fast.orders.values())[::3]:  # free text that JSON must escape
        order.customer_id += ' "quoted" \\ é\n\u2028'
        order.cancel_reason = 'why? "because"\t'
    for projection in PROJECTIONS:
        expected = {k: _encode(v) for k, v in fast.documents(projection.name).items()}
        assert documents_json(fast, projection.name) == expected


async def test_the_fast_fold_equals_the_projections_after_every_event() -> None:
    events = random_log(99, orders=8)
    for end in range(1, len(events) + 1):
        assert fast_documents(events[:end]) == await validated_documents(events[:end])


def _event(event: RecordedEvent, **changes: Any) -> RecordedEvent:
    fields = {name: getattr(event, name) for name in RecordedEvent.__slots__}
    return RecordedEvent(**{**fields, **changes})


def _refusals(events: list[RecordedEvent]) -> list[RecordedEvent]:
    created, added = events[0], events[1]
    return [
        _event(created),  # created twice
        _event(added),  # a duplicate
        _event(added, version=5),  # a gap
        _event(added, stream_id="order-unknown"),  # no OrderCreated
        _event(created, stream_id="order-late", version=2),  # created at version 2
        _event(added, version=3, data={**added.data, "quantity": "2"}),  # coerced by pydantic
        _event(added, version=3, data={**added.data, "quantity": True}),
        _event(added, version=3, data={**added.data, "unit_price": 9.99}),
        _event(added, version=3, data={**added.data, "unit_price": "9.99\n"}),
        _event(added, version=3, data={**added.data, "unit_price": "١٢"}),
        _event(added, version=3, data={"sku": "X", "quantity": 1}),  # missing field
        _event(added, version=3, data=["not", "a", "mapping"]),
        _event(added, version=3, metadata={"correlation_id": 7}),
        _event(added, version=3, data={"sku": "T", "quantity": 1, "unit_price": "1" * 40}),
        _event(added, version=3, type="OrderConfirmed", data={"total": "9" * 40}),
        _event(created, stream_id="order-n", data={"customer_id": 42}),
    ]


def test_the_fast_fold_refuses_what_it_does_not_handle_and_changes_nothing() -> None:
    log = _Log(random.Random(1))
    log.add("order-a", 1, "OrderCreated", {"customer_id": "c"})
    log.add("order-a", 2, "ItemAdded", {"sku": "S", "quantity": 1, "unit_price": "2.00"})
    fast = LogFold()
    assert all(fast.add(event) for event in log.events)
    before = {p.name: copy.deepcopy(fast.documents(p.name)) for p in PROJECTIONS}
    for event in _refusals(log.events):
        assert not fast.add(event), event
        assert {p.name: fast.documents(p.name) for p in PROJECTIONS} == before
    log.add("order-a", 3, "OrderConfirmed", {"total": "2.00"})
    log.add("order-a", 4, "ItemAdded", {"sku": "S", "quantity": 1, "unit_price": "2.00"})
    assert fast.add(log.events[2])
    assert not fast.add(log.events[3])  # items cannot follow a confirm


def test_the_fast_fold_refuses_stock_events_it_does_not_handle_and_changes_nothing() -> None:
    log = _Log(random.Random(2))
    log.add("inventory-S", 1, "StockReceived", {"quantity": 5})
    log.add("inventory-S", 2, "StockReserved", {"order_id": "o", "quantity": 3})
    fast = LogFold()
    assert all(fast.add_stock(event) for event in log.events)
    received, reserved = log.events
    before = copy.deepcopy(fast.documents("stock_levels"))
    assert before["S"]["available"] == 2
    for event in [
        _event(reserved),  # a duplicate
        _event(received, version=4),  # a gap
        _event(received, version=3, data={"quantity": "1"}),  # coerced by pydantic
        _event(received, version=3, data={"quantity": True}),
        _event(received, version=3, data={"quantity": -1}),  # out of the contract
        _event(reserved, version=3, data={"order_id": "p", "quantity": 9}),  # oversold
        _event(
            reserved, version=3, type="ReservationCommitted", data={"order_id": 7, "quantity": 1}
        ),
        _event(received, version=3, metadata={"causation_id": 7}),
        _event(received, version=3, type="StockCounted"),
    ]:
        assert not fast.add_stock(event), event
        assert fast.documents("stock_levels") == before
