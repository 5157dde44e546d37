"""Domain events of the Order aggregate, and their codec (stored form: domain/codec.py)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

from domain.codec import EventCodec, UnknownEventType, Upcaster, event_type_name


@dataclass(frozen=True, slots=True)
class OrderCreated:
    customer_id: str


@dataclass(frozen=True, slots=True)
class ItemAdded:
    """Schema version 2: the price is an amount (`unit_price`) and an ISO 4217 `currency`.
    Version 1 had no currency: it meant the shop's default one (see `item_added_v1_to_v2`)."""

    sku: str
    quantity: int
    unit_price: Decimal
    currency: str


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


def item_added_v1_to_v2(data: dict[str, Any], *, default_currency: str) -> dict[str, Any]:
    """ItemAdded v1 → v2: a v1 price was in the shop's default currency, the one it had
    when the event was written. Pure: the currency is an argument, bound once by the
    composition root from its setting (CONVEYOR_DEFAULT_CURRENCY)."""
    return {**data, "currency": default_currency}


def upcasters(default_currency: str) -> dict[tuple[str, int], Upcaster]:
    """The upcasters that need the shop's settings, bound to them."""
    return {("ItemAdded", 1): partial(item_added_v1_to_v2, default_currency=default_currency)}


# The codec of the current shapes. It holds no upcaster that needs a setting, so it refuses
# a v1 ItemAdded (MissingUpcaster) rather than guess its currency: stored events are read
# through `codec(default_currency)`, which the composition root builds.
CODEC: EventCodec[DomainEvent] = EventCodec(
    (OrderCreated, ItemAdded, ItemRemoved, OrderConfirmed, OrderCancelled, OrderFulfilled),
    schema_versions={"ItemAdded": 2},
)


def codec(default_currency: str) -> EventCodec[DomainEvent]:
    """Order's codec with every upcaster, those bound to the shop's default currency too."""
    return CODEC.with_upcasters(upcasters(default_currency))


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
    "codec",
    "event_from_data",
    "event_to_data",
    "event_type_name",
    "item_added_v1_to_v2",
    "upcasters",
]
