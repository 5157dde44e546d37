"""From a stored event to its integration event: the one place that asks the registry.

`IntegrationMapper.integration_event` answers for the gateway, rebuilds, healing and the
reconciler alike: the aggregate whose contract covers the event (Registry.publisher_of),
its envelope, and the contract's *sticky* fields — values of a stream's first domain event
repeated in every envelope of that stream (Order: `customer_id` from OrderCreated). Those
come from a bounded cache (filled as first events stream past) or, on a miss, from the
stream's first domain event in the event store. Rejection markers sit in the aggregate
streams but have no contract: passed over silently, as they are expected.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from conveyor.application.aggregates import AggregateDefinition, Registry, is_marker
from conveyor.application.rejections import is_rejection_stream
from conveyor.eventstore.port import EventStore, RecordedEvent
from domain.fulfilment.workflow import STREAM_PREFIX as FULFILMENT_STREAM_PREFIX
from messaging.integration_events import NotAnIntegrationEvent, to_integration_event

INTERNAL_STREAM_PREFIXES: tuple[str, ...] = (FULFILMENT_STREAM_PREFIX,)
"""Streams of conveyor's own process managers: state, never published."""
logger = logging.getLogger("conveyor.gateway")

# A stream's first domain event is looked for in this many events first (the handler appends
# one marker per rejected command: a flood before creation is rare, but then read on).
_FIRST_EVENT_SCAN = 1000


class UnknownAggregate(LookupError):
    pass


class IntegrationMapper:
    def __init__(self, store: EventStore, aggregates: Registry, *, capacity: int = 100_000) -> None:
        self._store = store
        self._aggregates = aggregates
        self._capacity = capacity
        self._sticky: OrderedDict[str, Mapping[str, str]] = OrderedDict()
        self.skipped = 0

    def remember(self, stream_id: str, values: Mapping[str, str]) -> None:
        self._sticky[stream_id] = values
        self._sticky.move_to_end(stream_id)
        if len(self._sticky) > self._capacity:
            self._sticky.popitem(last=False)

    async def sticky_of(self, definition: AggregateDefinition, event: RecordedEvent) -> Any:
        sticky = definition.contract.sticky
        if not sticky:
            return {}
        if all(event.type == source for source, _ in sticky.values()):
            values = {name: str(event.data[key]) for name, (_, key) in sticky.items()}
            self.remember(event.stream_id, values)
            return values
        cached = self._sticky.get(event.stream_id)
        if cached is not None:
            return cached
        stored = await self._store.read_stream(event.stream_id, to_version=_FIRST_EVENT_SCAN)
        first = next((e for e in stored if not is_marker(e)), None)
        if first is None and len(stored) >= _FIRST_EVENT_SCAN:
            # Nothing but markers so far: the first domain event is further on, and the
            # event being mapped proves there is one. Never skip it for a bound.
            stored = await self._store.read_stream(event.stream_id)
            first = next((e for e in stored if not is_marker(e)), None)
        if first is None or any(first.type != source for source, _ in sticky.values()):
            raise UnknownAggregate(
                f"{event.stream_id!r} does not start with "
                f"{', '.join(sorted({s for s, _ in sticky.values()}))}"
            )
        values = {name: str(first.data[key]) for name, (_, key) in sticky.items()}
        self.remember(event.stream_id, values)
        return values

    async def integration_event(self, event: RecordedEvent) -> Any | None:
        """The public form of a stored event, or None for one that has none.

        The global log may hold other applications' streams (KurrentDB is shared) and event
        types without a contract: those are skipped, never allowed to halt the relay.
        conveyor's own rejection records (markers in aggregate streams, and the
        `rejections-…` streams of earlier versions) and its process managers' state
        (`fulfilment-…`) are bookkeeping with no public form: passed over silently, as
        they are expected.
        """
        if is_marker(event) or is_rejection_stream(event.stream_id):
            return None
        if event.stream_id.startswith(INTERNAL_STREAM_PREFIXES):
            return None
        definition = self._aggregates.publisher_of(event)
        if definition is None:
            self._skip(event, "it is not an aggregate event with an integration contract")
            return None
        try:
            return to_integration_event(event, definition, await self.sticky_of(definition, event))
        except (UnknownAggregate, NotAnIntegrationEvent, KeyError, ValueError) as problem:
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
