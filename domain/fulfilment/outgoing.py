"""What the workflow asks other aggregates to do, with command ids derived from causes.

A command id is uuid5(namespace, cause event id | purpose | sku): the same cause always
yields the same id, so a redelivered input, or a re-send after a crash, is deduplicated by the
target aggregate's command-id idempotency instead of reserving, charging or releasing twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from domain.fulfilment.events import (
    FulfilmentCancelled,
    FulfilmentCompleted,
    FulfilmentRequested,
    FulfilmentStarted,
    FulfilmentWithdrawn,
    LatePaymentRefunded,
    LateReservationReleased,
    PaymentRequestIssued,
    WorkflowEvent,
)
from domain.inventory.commands import CommitReservation, ReleaseReservation, ReserveStock
from domain.orders.commands import CancelOrder, FulfilOrder
from domain.payments.commands import RefundPayment, RequestPayment

COMMAND_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "conveyor:fulfilment:commands")

TargetCommand = (
    ReserveStock
    | ReleaseReservation
    | CommitReservation
    | RequestPayment
    | RefundPayment
    | FulfilOrder
    | CancelOrder
)

INVENTORY = "inventory"
PAYMENTS = "payments"
ORDERS = "orders"


def command_id(cause: str, purpose: str, sku: str = "") -> str:
    return str(uuid.uuid5(COMMAND_ID_NAMESPACE, f"{cause}|{purpose}|{sku}"))


@dataclass(frozen=True, slots=True)
class OutgoingCommand:
    """One command to send: `aggregate` names the target, `command` is its own dataclass."""

    command_id: str
    aggregate: str
    command: TargetCommand

    @property
    def command_type(self) -> str:
        return type(self.command).__name__


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Deliver `FulfilmentTimedOut(order_id, token)` at `deadline` (a durable delayed message)."""

    message_id: str
    order_id: str
    deadline: datetime
    token: str


def _reserve(cause: str, order_id: str, sku: str, quantity: int) -> OutgoingCommand:
    return OutgoingCommand(
        command_id(cause, "reserve", sku), INVENTORY, ReserveStock(sku, order_id, quantity)
    )


def _release(cause: str, order_id: str, sku: str) -> OutgoingCommand:
    return OutgoingCommand(
        command_id(cause, "release", sku), INVENTORY, ReleaseReservation(sku, order_id)
    )


def _commit(cause: str, order_id: str, sku: str) -> OutgoingCommand:
    return OutgoingCommand(
        command_id(cause, "commit", sku), INVENTORY, CommitReservation(sku, order_id)
    )


def _refund(cause: str, order_id: str, reason: str) -> OutgoingCommand:
    return OutgoingCommand(command_id(cause, "refund"), PAYMENTS, RefundPayment(order_id, reason))


def commands_for(order_id: str, event: WorkflowEvent) -> list[OutgoingCommand]:
    """The commands a recorded workflow event stands for (none for a fact merely noted)."""
    match event:
        case FulfilmentStarted(cause=cause, lines=lines):
            return [_reserve(cause, order_id, line.sku, line.quantity) for line in lines]
        case PaymentRequestIssued(cause=cause, amount=amount, currency=currency):
            return [
                OutgoingCommand(
                    command_id(cause, "request-payment"),
                    PAYMENTS,
                    RequestPayment(order_id, amount, currency),
                )
            ]
        case FulfilmentCompleted(cause=cause, committed=committed, released=released):
            return [
                *(_commit(cause, order_id, sku) for sku in committed),
                *(_release(cause, order_id, sku) for sku in released),
            ]
        case FulfilmentRequested(cause=cause):
            return [OutgoingCommand(command_id(cause, "fulfil"), ORDERS, FulfilOrder(order_id))]
        case FulfilmentWithdrawn(cause=cause, reason=reason, released=released, refund=refund):
            return [
                *(_release(cause, order_id, sku) for sku in released),
                *([_refund(cause, order_id, reason)] if refund else []),
            ]
        case FulfilmentCancelled(cause=cause, reason=reason, released=released, refund=refund):
            return [
                *(_release(cause, order_id, sku) for sku in released),
                *([_refund(cause, order_id, reason)] if refund else []),
                OutgoingCommand(command_id(cause, "cancel"), ORDERS, CancelOrder(order_id, reason)),
            ]
        case LateReservationReleased(cause=cause, sku=sku):
            return [_release(cause, order_id, sku)]
        case LatePaymentRefunded(cause=cause):
            return [_refund(cause, order_id, "order already cancelled")]
    return []


def timeouts_for(order_id: str, event: WorkflowEvent) -> list[ScheduleTimeout]:
    if isinstance(event, FulfilmentStarted):
        return [
            ScheduleTimeout(
                message_id=command_id(event.cause, "timeout"),
                order_id=order_id,
                deadline=datetime.fromisoformat(event.deadline),
                token=event.deadline,
            )
        ]
    return []
