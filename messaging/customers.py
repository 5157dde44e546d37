"""Which customer an order belongs to, for enriching integration events.

Only OrderCreated carries the customer; every later event of the order is looked up here:
from a bounded cache (filled as OrderCreated events stream past) or, on a miss, from the
order's first event in the event store.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from conveyor.application.rejections import is_rejection_stream
from conveyor.application.streams import STREAM_PREFIX, order_id_of, order_stream
from conveyor.eventstore.port import EventStore, RecordedEvent
from messaging.integration_events import (
    ROUTING_KEYS,
    IntegrationEvent,
    NotAnIntegrationEvent,
    to_integration_event,
)

logger = logging.getLogger("conveyor.gateway")


class UnknownOrder(LookupError):
    pass


class CustomerDirectory:
    def __init__(self, store: EventStore, *, capacity: int = 100_000) -> None:
        self._store = store
        self._capacity = capacity
        self._customers: OrderedDict[str, str] = OrderedDict()
        self.skipped = 0

    def remember(self, order_id: str, customer_id: str) -> None:
        self._customers[order_id] = customer_id
        self._customers.move_to_end(order_id)
        if len(self._customers) > self._capacity:
            self._customers.popitem(last=False)

    async def customer_of(self, event: RecordedEvent) -> str:
        order_id = order_id_of(event.stream_id)
        if event.type == "OrderCreated":
            customer = str(event.data["customer_id"])
            self.remember(order_id, customer)
            return customer
        cached = self._customers.get(order_id)
        if cached is not None:
            return cached
        first = await self._store.read_stream(order_stream(order_id), to_version=1)
        if not first or first[0].type != "OrderCreated":
            raise UnknownOrder(f"order {order_id!r} has no OrderCreated event")
        customer = str(first[0].data["customer_id"])
        self.remember(order_id, customer)
        return customer

    async def integration_event(self, event: RecordedEvent) -> IntegrationEvent | None:
        """The public form of a stored event, or None for one that has none.

        The global log may hold other applications' streams (KurrentDB is shared) and event
        types without a contract: those are skipped, never allowed to halt the relay.
        conveyor's own rejection records (conveyor/application/rejections.py) are bookkeeping with
        no public form: passed over silently, as they are expected.
        """
        if is_rejection_stream(event.stream_id):
            return None
        if not event.stream_id.startswith(STREAM_PREFIX) or event.type not in ROUTING_KEYS:
            self._skip(event, "it is not an order event with an integration contract")
            return None
        try:
            return to_integration_event(event, await self.customer_of(event))
        except (UnknownOrder, NotAnIntegrationEvent, KeyError, ValueError) as problem:
            self._skip(event, f"it cannot be mapped: {problem}")
            return None

    def _skip(self, event: RecordedEvent, why: str) -> None:
        self.skipped += 1
        logger.warning(
            "skipping event %s (%s in %s at position %d): %s",
            event.event_id,
            event.type,
            event.stream_id,
            event.position,
            why,
        )
