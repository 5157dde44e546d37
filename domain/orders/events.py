"""Domain events of the Order aggregate, and their codec (stored form: domain/codec.py)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from domain.codec import EventCodec, UnknownEventType, Upcaster, event_type_name


@dataclass(frozen=True, slots=True)
class OrderCreated:
    customer_id: str


@dataclass(frozen=True, slots=True)
class ItemAdded:
    sku: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class ItemRemoved:
    sku: str


@dataclass(frozen=True, slots=True)
class OrderConfirmed:
    total: Decimal


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    reason: str


@dataclass(frozen=True, slots=True)
class OrderFulfilled:
    """Stock committed and payment authorized: the order is done and accepts nothing more."""


DomainEvent = (
    OrderCreated | ItemAdded | ItemRemoved | OrderConfirmed | OrderCancelled | OrderFulfilled
)

CODEC: EventCodec[DomainEvent] = EventCodec(
    (OrderCreated, ItemAdded, ItemRemoved, OrderConfirmed, OrderCancelled, OrderFulfilled)
)
# The schema version written for each event type today. Bump it together with an upcaster
# from the previous version when an event's shape changes.
EVENT_TYPES = CODEC.event_types
CURRENT_SCHEMA_VERSION = CODEC.current_schema_version
UPCASTERS: dict[tuple[str, int], Upcaster] = CODEC.upcasters
event_to_data = CODEC.to_data
event_from_data = CODEC.from_data

__all__ = [
    "CODEC",
    "CURRENT_SCHEMA_VERSION",
    "EVENT_TYPES",
    "UPCASTERS",
    "DomainEvent",
    "ItemAdded",
    "ItemRemoved",
    "OrderCancelled",
    "OrderConfirmed",
    "OrderCreated",
    "OrderFulfilled",
    "UnknownEventType",
    "event_from_data",
    "event_to_data",
    "event_type_name",
]
