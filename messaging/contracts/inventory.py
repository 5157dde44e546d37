"""The Inventory aggregate's wire contract: its commands on `inventory.commands` and its
integration events on `conveyor.events` (`inventory.*`), in the generic envelope
(`aggregate: "inventory"`, `aggregate_id`: the SKU).

One stream per SKU. A reservation asked for more than is available is published as a fact
(`inventory.reservation_refused`), not rejected: the fulfilment workflow learns outcomes
only from integration events.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from domain.inventory.commands import (
    Command,
    CommitReservation,
    ReceiveStock,
    ReleaseReservation,
    ReserveStock,
)
from messaging.contracts.wire import (
    AggregateEvent,
    CommandMessage,
    EventData,
    Id,
    Identifier,
    Quantity,
)

COMMAND_QUEUE = "inventory.commands"
STREAM_PREFIX = "inventory-"
ROUTING_KEY_PREFIX = "inventory."
CONTRACT_VERSION = 1


class _InventoryCommandMessage(CommandMessage):
    sku: Identifier

    def to_command(self) -> Command:
        raise NotImplementedError


class ReceiveStockMessage(_InventoryCommandMessage):
    type: Literal["ReceiveStock"]
    quantity: Quantity

    def to_command(self) -> Command:
        return ReceiveStock(sku=self.sku, quantity=self.quantity)


class ReserveStockMessage(_InventoryCommandMessage):
    type: Literal["ReserveStock"]
    order_id: Identifier
    quantity: Quantity

    def to_command(self) -> Command:
        return ReserveStock(sku=self.sku, order_id=self.order_id, quantity=self.quantity)


class ReleaseReservationMessage(_InventoryCommandMessage):
    type: Literal["ReleaseReservation"]
    order_id: Identifier

    def to_command(self) -> Command:
        return ReleaseReservation(sku=self.sku, order_id=self.order_id)


class CommitReservationMessage(_InventoryCommandMessage):
    type: Literal["CommitReservation"]
    order_id: Identifier

    def to_command(self) -> Command:
        return CommitReservation(sku=self.sku, order_id=self.order_id)


COMMAND_MESSAGES: dict[str, type[CommandMessage]] = {
    "ReceiveStock": ReceiveStockMessage,
    "ReserveStock": ReserveStockMessage,
    "ReleaseReservation": ReleaseReservationMessage,
    "CommitReservation": CommitReservationMessage,
}

ROUTING_KEYS: dict[str, str] = {
    "StockReceived": "inventory.stock_received",
    "StockReserved": "inventory.stock_reserved",
    "ReservationRefused": "inventory.reservation_refused",
    "ReservationReleased": "inventory.reservation_released",
    "ReservationCommitted": "inventory.reservation_committed",
}

_Units = Field(ge=0, le=10**12)


class StockReceivedData(EventData):
    quantity: int = _Units


class StockReservedData(EventData):
    order_id: Id
    quantity: int = _Units


class ReservationRefusedData(EventData):
    order_id: Id
    sku: Id
    requested: int = _Units
    available: int = Field(ge=-(10**12), le=10**12)


class ReservationReleasedData(EventData):
    order_id: Id
    quantity: int = _Units


class ReservationCommittedData(EventData):
    order_id: Id
    quantity: int = _Units


class _InventoryEvent(AggregateEvent):
    routing_keys = ROUTING_KEYS


class StockReceivedEvent(_InventoryEvent):
    type: Literal["StockReceived"]
    data: StockReceivedData


class StockReservedEvent(_InventoryEvent):
    type: Literal["StockReserved"]
    data: StockReservedData


class ReservationRefusedEvent(_InventoryEvent):
    type: Literal["ReservationRefused"]
    data: ReservationRefusedData


class ReservationReleasedEvent(_InventoryEvent):
    type: Literal["ReservationReleased"]
    data: ReservationReleasedData


class ReservationCommittedEvent(_InventoryEvent):
    type: Literal["ReservationCommitted"]
    data: ReservationCommittedData


EVENT_MODELS: dict[str, type[_InventoryEvent]] = {
    "StockReceived": StockReceivedEvent,
    "StockReserved": StockReservedEvent,
    "ReservationRefused": ReservationRefusedEvent,
    "ReservationReleased": ReservationReleasedEvent,
    "ReservationCommitted": ReservationCommittedEvent,
}
