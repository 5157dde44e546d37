"""The Inventory aggregate: one SKU's stock, rebuilt from events, and `decide` for the rules.

A SKU's stream is long-lived (thousands of events): folding costs O(1) per event. The counters
(on hand, reserved, received, committed) are carried, never recomputed from history, and
`rebuild` updates one private reservations dict in place instead of copying it per event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from domain.inventory.commands import (
    Command,
    CommitReservation,
    ReceiveStock,
    ReleaseReservation,
    ReserveStock,
)
from domain.inventory.errors import (
    InvalidInventoryField,
    InvalidStockQuantity,
    ReservationAlreadyExists,
    ReservationNotFound,
    StockLimitExceeded,
)
from domain.inventory.events import (
    DomainEvent,
    ReservationCommitted,
    ReservationRefused,
    ReservationReleased,
    StockReceived,
    StockReserved,
)

MIN_QUANTITY = 1
MAX_QUANTITY_PER_COMMAND = 1_000_000
# On hand never exceeds this: a bound far inside any store's integer range.
MAX_ON_HAND = 1_000_000_000

_NO_RESERVATIONS: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Inventory:
    sku: str
    version: int = 0
    on_hand: int = 0
    reserved: int = 0
    reservations: Mapping[str, int] = field(default_factory=lambda: _NO_RESERVATIONS)
    """Open reservations: order_id → quantity. Committed and released ones leave it."""
    received_total: int = 0
    committed_total: int = 0

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved

    def apply(self, event: DomainEvent) -> Inventory:
        """The state after `event`. Each applied event is one version.

        Copies the open reservations (bounded by open orders, not by history); `rebuild`
        folds a whole history without any copy.
        """
        reservations = dict(self.reservations)
        return _fold(self, event, reservations, MappingProxyType(reservations))


def _fold(
    state: Inventory, event: DomainEvent, reservations: dict[str, int], view: Mapping[str, int]
) -> Inventory:
    """`state` after `event`; `reservations` (seen through `view`) is updated in place."""
    version = state.version + 1
    match event:
        case StockReceived(quantity=quantity):
            return replace(
                state,
                version=version,
                on_hand=state.on_hand + quantity,
                received_total=state.received_total + quantity,
                reservations=view,
            )
        case StockReserved(order_id=order_id, quantity=quantity):
            reservations[order_id] = quantity
            return replace(
                state, version=version, reserved=state.reserved + quantity, reservations=view
            )
        case ReservationRefused():
            return replace(state, version=version, reservations=view)
        case ReservationReleased(order_id=order_id, quantity=quantity):
            reservations.pop(order_id, None)
            return replace(
                state, version=version, reserved=state.reserved - quantity, reservations=view
            )
        case ReservationCommitted(order_id=order_id, quantity=quantity):
            reservations.pop(order_id, None)
            return replace(
                state,
                version=version,
                on_hand=state.on_hand - quantity,
                reserved=state.reserved - quantity,
                committed_total=state.committed_total + quantity,
                reservations=view,
            )


def rebuild(sku: str, events: Iterable[DomainEvent]) -> Inventory:
    """The state after `events`, in O(1) per event: one private dict, updated in place.

    Every intermediate state shares that dict, but none escapes: only the last is returned.
    """
    reservations: dict[str, int] = {}
    view = MappingProxyType(reservations)
    state = Inventory(sku, reservations=view)
    for event in events:
        state = _fold(state, event, reservations, view)
    return state


def decide(state: Inventory, command: Command) -> list[DomainEvent]:
    """The events that `command` produces on `state`, or an InventoryRuleViolation."""
    sku = _required_text("sku", command.sku)
    match command:
        case ReceiveStock():
            quantity = _valid_quantity(sku, command.quantity)
            if state.on_hand + quantity > MAX_ON_HAND:
                raise StockLimitExceeded(
                    f"sku {sku!r} would hold {state.on_hand + quantity} units "
                    f"({state.on_hand} + {quantity}); the limit is {MAX_ON_HAND}",
                    sku=sku,
                    quantity=quantity,
                    on_hand=state.on_hand,
                )
            return [StockReceived(quantity=quantity)]
        case ReserveStock():
            return _reserve(state, command)
        case ReleaseReservation():
            order_id = _required_text("order_id", command.order_id)
            held = _existing_reservation(state, order_id, "release")
            return [ReservationReleased(order_id=order_id, quantity=held)]
        case CommitReservation():
            order_id = _required_text("order_id", command.order_id)
            held = _existing_reservation(state, order_id, "commit")
            return [ReservationCommitted(order_id=order_id, quantity=held)]
    raise TypeError(f"not an inventory command: {command!r}")  # pragma: no cover


def _reserve(state: Inventory, command: ReserveStock) -> list[DomainEvent]:
    sku = state.sku
    order_id = _required_text("order_id", command.order_id)
    quantity = _valid_quantity(sku, command.quantity)
    held = state.reservations.get(order_id)
    if held is not None:
        raise ReservationAlreadyExists(
            f"order {order_id!r} already holds a reservation of {held} units of sku {sku!r}: "
            "one reservation per order and sku",
            sku=sku,
            order_id=order_id,
            reserved=held,
        )
    if quantity > state.available:
        # Not a rule violation: running out of stock is a business fact the fulfilment
        # workflow must learn from an integration event (outcomes are transient).
        return [
            ReservationRefused(
                order_id=order_id, sku=sku, requested=quantity, available=state.available
            )
        ]
    return [StockReserved(order_id=order_id, quantity=quantity)]


def _existing_reservation(state: Inventory, order_id: str, action: str) -> int:
    held = state.reservations.get(order_id)
    if held is None:
        raise ReservationNotFound(
            f"cannot {action} the reservation of order {order_id!r} on sku {state.sku!r}: "
            "there is none",
            sku=state.sku,
            order_id=order_id,
        )
    return held


def _valid_quantity(sku: str, quantity: int) -> int:
    if (
        isinstance(quantity, bool)
        or not isinstance(quantity, int)
        or not MIN_QUANTITY <= quantity <= MAX_QUANTITY_PER_COMMAND
    ):
        raise InvalidStockQuantity(
            f"quantity must be an integer from {MIN_QUANTITY} to {MAX_QUANTITY_PER_COMMAND}, "
            f"got {quantity!r} for sku {sku!r}",
            sku=sku,
            quantity=quantity,
        )
    return quantity


def _required_text(name: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInventoryField(f"{name} must be a non-empty string, got {value!r}", field=name)
    return value
