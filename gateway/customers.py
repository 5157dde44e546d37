"""Which customer an order belongs to, for enriching integration events.

Only OrderCreated carries the customer; every later event of the order is looked up here:
from a bounded cache (filled as OrderCreated events stream past) or, on a miss, from the
order's first event in the event store.
"""

from __future__ import annotations

from collections import OrderedDict

from application.streams import order_id_of, order_stream
from eventstore.port import EventStore, RecordedEvent
from messaging.integration_events import IntegrationEvent, to_integration_event


class UnknownOrder(LookupError):
    pass


class CustomerDirectory:
    def __init__(self, store: EventStore, *, capacity: int = 100_000) -> None:
        self._store = store
        self._capacity = capacity
        self._customers: OrderedDict[str, str] = OrderedDict()

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

    async def integration_event(self, event: RecordedEvent) -> IntegrationEvent:
        return to_integration_event(event, await self.customer_of(event))
