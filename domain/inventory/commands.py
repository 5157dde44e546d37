"""Commands: what a caller asks one SKU's Inventory aggregate to do."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReceiveStock:
    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class ReserveStock:
    sku: str
    order_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class ReleaseReservation:
    sku: str
    order_id: str


@dataclass(frozen=True, slots=True)
class CommitReservation:
    """The order ships: the reserved units leave the warehouse."""

    sku: str
    order_id: str


Command = ReceiveStock | ReserveStock | ReleaseReservation | CommitReservation

COMMAND_TYPES: dict[str, type[Command]] = {
    cls.__name__: cls for cls in (ReceiveStock, ReserveStock, ReleaseReservation, CommitReservation)
}
