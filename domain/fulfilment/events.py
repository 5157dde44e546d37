"""The fulfilment workflow's own events (one stream per order), and their codec.

Every event names its `cause`, the event id of the input that produced it: that is how a
redelivered input is recognised, and the seed of every command id. Events that issue commands
carry all the data those commands need, so `outgoing.commands_for(order_id, event)` is a pure
function of the event alone. Times are ISO-8601 strings (the codec stores no datetimes).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from domain.codec import EventCodec
from domain.fulfilment.inputs import FulfilmentLine


@dataclass(frozen=True, slots=True)
class FulfilmentStarted:
    """Reserve every line's stock; a timeout is scheduled for `deadline`."""

    cause: str
    lines: tuple[FulfilmentLine, ...]
    total: Decimal
    currency: str
    started_at: str
    deadline: str
    timeout_seconds: int


@dataclass(frozen=True, slots=True)
class StockReservationNoted:
    cause: str
    sku: str
    quantity: int
    at: str


@dataclass(frozen=True, slots=True)
class ReservationRefusalNoted:
    cause: str
    sku: str
    reason: str
    at: str


@dataclass(frozen=True, slots=True)
class PaymentAuthorizationNoted:
    cause: str
    at: str


@dataclass(frozen=True, slots=True)
class PaymentDeclineNoted:
    cause: str
    reason: str
    at: str


@dataclass(frozen=True, slots=True)
class PaymentRequestIssued:
    """Every line is reserved: ask for the order total."""

    cause: str
    amount: Decimal
    currency: str
    at: str


@dataclass(frozen=True, slots=True)
class FulfilmentRequested:
    """Every line reserved and the payment authorized: ask the Order to fulfil itself. The
    Order arbitrates a race with its customer's cancellation: `orders.fulfilled` or
    `orders.cancelled` comes back."""

    cause: str
    at: str


@dataclass(frozen=True, slots=True)
class OrderFulfilmentNoted:
    cause: str
    at: str


@dataclass(frozen=True, slots=True)
class OrderCancellationNoted:
    """The order was cancelled outside the workflow (by its customer), with `reason`."""

    cause: str
    reason: str
    at: str


@dataclass(frozen=True, slots=True)
class FulfilmentCompleted:
    """The order is fulfilled: commit `committed`, release strays in `released`."""

    cause: str
    committed: tuple[str, ...]
    released: tuple[str, ...]
    at: str


@dataclass(frozen=True, slots=True)
class FulfilmentCancelled:
    """Compensation: release `released`, refund if `refund`, cancel the order with `reason`."""

    cause: str
    reason: str
    released: tuple[str, ...]
    refund: bool
    at: str


@dataclass(frozen=True, slots=True)
class FulfilmentWithdrawn:
    """The order was cancelled by its customer: release `released`, refund if `refund`; the
    order is already cancelled, so no CancelOrder is sent. The workflow ends cancelled."""

    cause: str
    reason: str
    released: tuple[str, ...]
    refund: bool
    at: str


@dataclass(frozen=True, slots=True)
class LateReservationReleased:
    """A reservation confirmed after the workflow was cancelled: give the stock back."""

    cause: str
    sku: str
    at: str


@dataclass(frozen=True, slots=True)
class LatePaymentRefunded:
    """A payment authorized after the workflow was cancelled: give the money back."""

    cause: str
    at: str


WorkflowEvent = (
    FulfilmentStarted
    | StockReservationNoted
    | ReservationRefusalNoted
    | PaymentAuthorizationNoted
    | PaymentDeclineNoted
    | PaymentRequestIssued
    | FulfilmentRequested
    | OrderFulfilmentNoted
    | OrderCancellationNoted
    | FulfilmentCompleted
    | FulfilmentCancelled
    | FulfilmentWithdrawn
    | LateReservationReleased
    | LatePaymentRefunded
)

CODEC: EventCodec[WorkflowEvent] = EventCodec(
    (
        FulfilmentStarted,
        StockReservationNoted,
        ReservationRefusalNoted,
        PaymentAuthorizationNoted,
        PaymentDeclineNoted,
        PaymentRequestIssued,
        FulfilmentCompleted,
        FulfilmentCancelled,
        FulfilmentRequested,
        OrderFulfilmentNoted,
        OrderCancellationNoted,
        FulfilmentWithdrawn,
        LateReservationReleased,
        LatePaymentRefunded,
    )
)

__all__ = [
    "CODEC",
    "FulfilmentCancelled",
    "FulfilmentCompleted",
    "FulfilmentRequested",
    "FulfilmentStarted",
    "FulfilmentWithdrawn",
    "LatePaymentRefunded",
    "LateReservationReleased",
    "OrderCancellationNoted",
    "OrderFulfilmentNoted",
    "PaymentAuthorizationNoted",
    "PaymentDeclineNoted",
    "PaymentRequestIssued",
    "ReservationRefusalNoted",
    "StockReservationNoted",
    "WorkflowEvent",
]
