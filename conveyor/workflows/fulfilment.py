"""The order-fulfilment process manager's use case: one input fact in, what to send out.

    load the workflow's stream `fulfilment-<order_id>` → decide (domain/fulfilment) →
    append the workflow events at the expected version → hand back the commands and
    timeouts they record, for the caller to send.

The events are appended BEFORE anything is sent: they record the commands (their ids derive
from the input's event id), so a crash after the append loses nothing. An input found already
applied (a redelivery after such a crash, a duplicate) is not decided again: the commands
and timeouts recorded for it are handed back once more, with the ids of the first time, and
the target aggregates' command-id idempotency makes the second send a no-op.

The workflow's stream belongs to no registered aggregate, so the gateway never publishes it
and projections never see it (`Registry.publisher_of` answers None for it).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from conveyor.application.aggregates import AggregateDefinition, is_marker
from conveyor.application.locks import KeyedLocks
from conveyor.eventstore.port import ConcurrencyError, EventStore, NewEvent, RecordedEvent
from domain.fulfilment.events import CODEC, WorkflowEvent
from domain.fulfilment.inputs import FulfilmentLine, Input, OrderConfirmed
from domain.fulfilment.outgoing import OutgoingCommand, ScheduleTimeout, timeouts_for
from domain.fulfilment.workflow import (
    FulfilmentState,
    commands_recorded_for,
    decide,
    rebuild,
    stream_name,
)

EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "conveyor:fulfilment:events")


class OrderEventNotStored(LookupError):
    """An `orders.confirmed` whose source event is not (yet) in the order's stream: a
    transient failure (a store replica behind), retried through the retry ladder."""


@dataclass(frozen=True, slots=True)
class Reaction:
    """What one input leads to: the state after it, and what to send now."""

    state: FulfilmentState
    commands: list[OutgoingCommand]
    timeouts: list[ScheduleTimeout]
    replayed: bool
    """The input was applied before: these are the commands recorded for it, sent again."""
    appended: int = 0
    """Workflow events appended for it (0: a duplicate, or a fact that added nothing)."""


def event_id_for(stream_id: str, cause: str, index: int) -> uuid.UUID:
    return uuid.uuid5(EVENT_ID_NAMESPACE, f"{stream_id}|{cause}|{index}")


class FulfilmentWorkflows:
    def __init__(
        self,
        store: EventStore,
        orders: AggregateDefinition,
        *,
        timeout: timedelta,
        conflict_attempts: int = 10,
        clock: type[datetime] = datetime,
    ) -> None:
        self._store = store
        self._orders = orders
        self._timeout = timeout
        self._conflict_attempts = conflict_attempts
        self._clock = clock
        self._locks = KeyedLocks()

    async def history(self, order_id: str) -> list[WorkflowEvent]:
        return _decode(await self._store.read_stream(stream_name(order_id)))

    async def state(self, order_id: str) -> FulfilmentState:
        return rebuild(order_id, await self.history(order_id))

    async def order_confirmed(
        self, event_id: str, occurred_at: datetime, order_id: str
    ) -> OrderConfirmed:
        """The confirmation with the order's lines as they were when it was confirmed: the
        order's stream read up to the confirming event (a temporal read, exact whatever
        happened to the order since). The `orders.confirmed` contract carries only the total."""
        prefix: list[RecordedEvent] = []
        for recorded in await self._store.read_stream(self._orders.stream(order_id)):
            prefix.append(recorded)
            if str(recorded.event_id) == event_id:
                break
        else:
            raise OrderEventNotStored(
                f"event {event_id} is not in {self._orders.stream(order_id)!r} (yet)"
            )
        order = self._orders.fold(order_id, (e for e in prefix if not is_marker(e)))
        lines = tuple(FulfilmentLine(line.sku, line.quantity) for line in order.lines.values())
        return OrderConfirmed(event_id, occurred_at, order_id, lines, order.total)

    async def handle(self, fact: Input) -> Reaction:
        stream_id = stream_name(fact.order_id)
        async with self._locks.hold(stream_id):  # conflicts remain possible across processes
            for attempt in range(1, self._conflict_attempts + 1):
                stored = await self._store.read_stream(stream_id)
                history = _decode(stored)
                state = rebuild(fact.order_id, history)
                if fact.event_id in state.applied_inputs:
                    return Reaction(
                        state,
                        commands_recorded_for(fact.order_id, history, fact.event_id),
                        [
                            t
                            for event in history
                            if event.cause == fact.event_id
                            for t in timeouts_for(fact.order_id, event)
                        ],
                        replayed=True,
                    )
                decision = decide(state, fact, timeout=self._timeout)
                if not decision.events:
                    return Reaction(state, [], [], replayed=False)
                try:
                    await self._store.append(
                        stream_id, len(stored), self._new_events(stream_id, decision.events)
                    )
                except ConcurrencyError:
                    if attempt == self._conflict_attempts:
                        raise
                    continue
                for event in decision.events:
                    state = state.apply(event)
                return Reaction(
                    state,
                    decision.commands,
                    decision.timeouts,
                    replayed=False,
                    appended=len(decision.events),
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _new_events(self, stream_id: str, events: Sequence[WorkflowEvent]) -> list[NewEvent]:
        now = self._clock.now(UTC)
        return [
            NewEvent(
                event_id=event_id_for(stream_id, event.cause, index),
                type=type(event).__name__,
                data=CODEC.to_data(event),
                occurred_at=now,
                schema_version=CODEC.schema_version_of(event),
            )
            for index, event in enumerate(events)
        ]


def _decode(stored: Sequence[RecordedEvent]) -> list[WorkflowEvent]:
    return [CODEC.from_data(e.type, e.schema_version, e.data) for e in stored]
