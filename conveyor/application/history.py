"""Temporal queries: an order's events and its state as of a version or a point in time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from conveyor.application.streams import fold, order_stream
from conveyor.eventstore.port import EventStore, RecordedEvent
from domain.orders.order import Order


@dataclass(frozen=True, slots=True)
class OrderHistory:
    order_id: str
    events: list[RecordedEvent]
    state: Order


async def order_history(
    store: EventStore,
    order_id: str,
    *,
    as_of_version: int | None = None,
    as_of: datetime | None = None,
) -> OrderHistory:
    events = await store.read_stream(order_stream(order_id), to_version=as_of_version, as_of=as_of)
    return OrderHistory(order_id=order_id, events=events, state=fold(order_id, events))
