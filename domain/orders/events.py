"""Domain events of the Order aggregate and their stored form.

The stored form (type name, schema version, JSON-ready data) lives here because it is part
of the domain's history: an old event must always be readable. Decimals are stored as
strings so no amount ever passes through a float. Upcasters turn an older schema version
into the current one when an event is read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


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


DomainEvent = OrderCreated | ItemAdded | ItemRemoved | OrderConfirmed | OrderCancelled

EVENT_TYPES: dict[str, type[DomainEvent]] = {
    cls.__name__: cls
    for cls in (OrderCreated, ItemAdded, ItemRemoved, OrderConfirmed, OrderCancelled)
}

# The schema version written for each event type today. Bump it together with an upcaster
# from the previous version when an event's shape changes.
CURRENT_SCHEMA_VERSION: dict[str, int] = dict.fromkeys(EVENT_TYPES, 1)

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
# (event type, from schema version) -> function producing the data of version + 1
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class UnknownEventType(ValueError):
    def __init__(self, event_type: str) -> None:
        super().__init__(f"unknown event type {event_type!r}")
        self.event_type = event_type


def event_type_name(event: DomainEvent) -> str:
    return type(event).__name__


def event_to_data(event: DomainEvent) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in event.__dataclass_fields__:
        value = getattr(event, name)
        data[name] = str(value) if isinstance(value, Decimal) else value
    return data


def event_from_data(event_type: str, schema_version: int, data: Mapping[str, Any]) -> DomainEvent:
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise UnknownEventType(event_type)
    current = dict(data)
    version = schema_version
    while version < CURRENT_SCHEMA_VERSION[event_type]:
        current = UPCASTERS[(event_type, version)](current)
        version += 1
    if cls is ItemAdded:
        return ItemAdded(
            sku=current["sku"],
            quantity=int(current["quantity"]),
            unit_price=Decimal(current["unit_price"]),
        )
    if cls is OrderConfirmed:
        return OrderConfirmed(total=Decimal(current["total"]))
    return cls(**current)
