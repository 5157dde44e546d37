"""How orders map onto event streams, and stored events back onto domain events."""

from __future__ import annotations

from collections.abc import Iterable

from conveyor.eventstore.port import RecordedEvent
from domain.orders.events import DomainEvent, event_from_data
from domain.orders.order import Order

STREAM_PREFIX = "order-"


def order_stream(order_id: str) -> str:
    return f"{STREAM_PREFIX}{order_id}"


def order_id_of(stream_id: str) -> str:
    return stream_id.removeprefix(STREAM_PREFIX)


def to_domain(event: RecordedEvent) -> DomainEvent:
    return event_from_data(event.type, event.schema_version, event.data)


def fold(order_id: str, events: Iterable[RecordedEvent]) -> Order:
    state = Order(order_id)
    for event in events:
        state = state.apply(to_domain(event))
    return state
