"""The integration facts the fulfilment workflow reacts to, one dataclass per fact.

Each carries `event_id`, the id of the integration event that delivered it (the source event
id the gateway publishes as AMQP `message_id`), and `occurred_at`, when that event was recorded.
Every command the workflow sends because of a fact gets an id derived from that `event_id`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class FulfilmentLine:
    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class OrderConfirmed:
    event_id: str
    occurred_at: datetime
    order_id: str
    lines: tuple[FulfilmentLine, ...]
    total: Decimal


@dataclass(frozen=True, slots=True)
class StockReserved:
    event_id: str
    occurred_at: datetime
    order_id: str
    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class ReservationRefused:
    """A ReserveStock the workflow sent was refused (Inventory's `insufficient_stock`)."""

    event_id: str
    occurred_at: datetime
    order_id: str
    sku: str
    reason: str


@dataclass(frozen=True, slots=True)
class PaymentAuthorized:
    event_id: str
    occurred_at: datetime
    order_id: str


@dataclass(frozen=True, slots=True)
class PaymentDeclined:
    event_id: str
    occurred_at: datetime
    order_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class FulfilmentTimedOut:
    """The durable timeout scheduled at the start came back; `token` names which one."""

    event_id: str
    occurred_at: datetime
    order_id: str
    token: str


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    """The order was cancelled (`orders.cancelled`): by its customer, or by the workflow."""

    event_id: str
    occurred_at: datetime
    order_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class OrderFulfilled:
    """The Order aggregate accepted the workflow's FulfilOrder (`orders.fulfilled`)."""

    event_id: str
    occurred_at: datetime
    order_id: str


Input = (
    OrderConfirmed
    | StockReserved
    | ReservationRefused
    | PaymentAuthorized
    | PaymentDeclined
    | FulfilmentTimedOut
    | OrderCancelled
    | OrderFulfilled
)
