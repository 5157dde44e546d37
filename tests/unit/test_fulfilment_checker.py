"""The chaos fulfilment checker (chaos/workflows.py) on logs written by the real command
handler, and on logs with each defect it must find written in by hand."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from chaos.workflows import FulfilmentVerdict, check_fulfilment
from conveyor.aggregates import AGGREGATES
from conveyor.application.commands import CommandEnvelope, CommandHandler
from conveyor.eventstore.memory import InMemoryEventStore
from conveyor.eventstore.port import NewEvent
from domain.inventory.commands import CommitReservation, ReceiveStock, ReserveStock
from domain.orders.commands import AddItem, CancelOrder, ConfirmOrder, CreateOrder, FulfilOrder
from domain.payments.commands import AuthorizePayment, RefundPayment, RequestPayment

NOW = datetime(2026, 12, 1, tzinfo=UTC)


class Shop:
    def __init__(self) -> None:
        self.store = InMemoryEventStore()
        self.handler = CommandHandler(self.store, AGGREGATES, clock=lambda: NOW)

    async def do(self, *commands: object) -> None:
        for command in commands:
            command_id = str(uuid.uuid4())
            outcome = await self.handler.handle(
                CommandEnvelope(command, command_id, command_id, command_id)
            )
            assert outcome.status == "accepted", outcome

    async def confirmed_order(self, order_id: str, sku: str, quantity: int) -> None:
        await self.do(
            CreateOrder(order_id, "c-1"),
            AddItem(order_id, sku, quantity, Decimal("2.00")),
            ConfirmOrder(order_id),
        )

    async def raw(self, stream_id: str, type_: str, **data: object) -> None:
        """An event written past the rules: what a defect would leave in the log."""
        version = len(await self.store.read_stream(stream_id))
        event = NewEvent(
            event_id=uuid.uuid4(),
            type=type_,
            data=dict(data),
            occurred_at=NOW,
            schema_version=1,
            metadata={"command_id": str(uuid.uuid4())},
        )
        await self.store.append(stream_id, version, [event])

    async def verdict(self) -> FulfilmentVerdict:
        return check_fulfilment(await self.store.read_all(after=0, limit=100_000))


@pytest.fixture
async def shop() -> Shop:
    shop = Shop()
    await shop.do(ReceiveStock("SKU-1", 5))
    return shop


async def test_a_fulfilled_and_a_cancelled_workflow_are_clean(shop: Shop) -> None:
    await shop.confirmed_order("o-1", "SKU-1", 2)
    await shop.do(
        ReserveStock("SKU-1", "o-1", 2),
        RequestPayment("o-1", Decimal("4.00")),
        AuthorizePayment("o-1", Decimal("4.00"), "psp-1"),
        CommitReservation("SKU-1", "o-1"),
        FulfilOrder("o-1"),
    )
    await shop.confirmed_order("o-2", "SKU-1", 9)
    await shop.do(ReserveStock("SKU-1", "o-2", 9))  # refused: a fact, nothing reserved
    await shop.do(CancelOrder("o-2", "stock unavailable: sku SKU-1"))
    verdict = await shop.verdict()
    assert verdict.as_json() | {"cancel_reasons": None} == {
        "confirmed": 2,
        "fulfilled": 1,
        "cancelled": 1,
        "cancel_reasons": None,
        "problems": 0,
        "unfinished": [],
        "oversold": [],
        "stock_drift": [],
        "left_reserved": [],
        "uncommitted": [],
        "double_reserved": [],
        "double_charged": [],
    }
    assert verdict.cancel_reasons == {"stock unavailable": 1}


async def test_an_unfinished_workflow_and_reservations_left_behind_are_found(shop: Shop) -> None:
    await shop.confirmed_order("o-1", "SKU-1", 2)
    await shop.confirmed_order("o-2", "SKU-1", 1)
    await shop.do(ReserveStock("SKU-1", "o-1", 2), CancelOrder("o-1", "timed out"))
    verdict = await shop.verdict()
    assert verdict.unfinished == ["o-2"]
    assert verdict.left_reserved == ["o-1/SKU-1"]
    assert verdict.problems == 2


async def test_a_fulfilled_order_with_an_uncommitted_reservation_is_found(shop: Shop) -> None:
    await shop.confirmed_order("o-1", "SKU-1", 2)
    await shop.do(ReserveStock("SKU-1", "o-1", 2), FulfilOrder("o-1"))
    assert (await shop.verdict()).uncommitted == ["o-1/SKU-1"]


async def test_overselling_and_a_doubled_reservation_are_found(shop: Shop) -> None:
    await shop.confirmed_order("o-1", "SKU-1", 4)
    await shop.do(ReserveStock("SKU-1", "o-1", 4))
    await shop.raw("inventory-SKU-1", "StockReserved", order_id="o-1", quantity=4)
    verdict = await shop.verdict()
    assert verdict.oversold == ["SKU-1"]  # 5 on hand, 8 reserved at one point
    assert verdict.double_reserved == ["o-1/SKU-1"]


async def test_payments_charged_twice_or_kept_after_a_cancellation_are_found(shop: Shop) -> None:
    for order_id in ("o-1", "o-2", "o-3"):
        await shop.confirmed_order(order_id, "SKU-1", 1)
        await shop.do(
            RequestPayment(order_id, Decimal("2.00")),
            AuthorizePayment(order_id, Decimal("2.00"), f"psp-{order_id}"),
        )
    await shop.raw("payment-o-1", "PaymentAuthorized", amount="2.00", provider_reference="x")
    await shop.do(CancelOrder("o-2", "payment declined: card"))  # authorized, never refunded
    await shop.do(RefundPayment("o-3", "goodwill"), FulfilOrder("o-3"))  # shipped for free
    verdict = await shop.verdict()
    assert sorted(verdict.double_charged) == [
        "o-1",
        "o-2 (cancelled, not refunded)",
        "o-3 (fulfilled, refunded)",
    ]
