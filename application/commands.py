"""Handling one command: load → (already done?) → decide → append, exactly once in effect.

Idempotency is designed in two layers:
* every event carries its command's `command_id`; before deciding, the handler looks for
  it in the loaded stream and, if found, reports "duplicate" with the original version;
* event ids are derived from (stream, command_id, index), so two racing deliveries of one
  command produce the same ids — the store's unique event id rejects the loser, which
  reloads, finds the command in the stream and reports "duplicate".
Commands for one order are serialised within a process (a lock per stream), so conflicts
only arise between processes. A version conflict is retried here with jittered backoff; if
conflicts outlast that, the ConcurrencyError escapes as a transient failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from application.locks import KeyedLocks
from application.streams import fold, order_stream
from domain.commands import Command
from domain.errors import OrderRuleViolation
from domain.events import CURRENT_SCHEMA_VERSION, event_to_data, event_type_name
from domain.order import decide
from eventstore.port import ConcurrencyError, EventStore, NewEvent, RecordedEvent

EVENT_ID_NAMESPACE = uuid.UUID("6f1d7a3c-3b0e-4c8e-9a51-7f0c2f7e9b10")

Status = Literal["accepted", "duplicate", "rejected"]


@dataclass(frozen=True, slots=True)
class CommandEnvelope:
    command: Command
    command_id: str
    correlation_id: str
    causation_id: str

    @property
    def order_id(self) -> str:
        return self.command.order_id


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    command_id: str
    status: Status
    order_id: str
    version: int
    reason: str | None = None
    rule: str | None = None
    event_ids: tuple[uuid.UUID, ...] = field(default=())

    def as_message(self) -> dict[str, object]:
        message: dict[str, object] = {
            "command_id": self.command_id,
            "status": self.status,
            "order_id": self.order_id,
            "version": self.version,
        }
        if self.status == "rejected":
            message["reason"] = self.reason
            message["rule"] = self.rule
        return message


def event_id_for(stream_id: str, command_id: str, index: int) -> uuid.UUID:
    return uuid.uuid5(EVENT_ID_NAMESPACE, f"{stream_id}\x1f{command_id}\x1f{index}")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CommandHandler:
    def __init__(
        self,
        store: EventStore,
        *,
        conflict_attempts: int = 10,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._store = store
        self._conflict_attempts = conflict_attempts
        self._clock = clock
        self._locks = KeyedLocks()

    async def handle(self, envelope: CommandEnvelope) -> CommandOutcome:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ConcurrencyError),
            stop=stop_after_attempt(self._conflict_attempts),
            wait=wait_random_exponential(multiplier=0.01, max=0.5),
            reraise=True,
        )
        async with self._locks.hold(order_stream(envelope.order_id)):
            async for attempt in retrying:
                with attempt:
                    return await self._handle_once(envelope)
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def _handle_once(self, envelope: CommandEnvelope) -> CommandOutcome:
        stream_id = order_stream(envelope.order_id)
        history = await self._store.read_stream(stream_id)
        earlier = _events_of_command(history, envelope.command_id)
        if earlier:
            return CommandOutcome(
                command_id=envelope.command_id,
                status="duplicate",
                order_id=envelope.order_id,
                version=earlier[-1].version,
                event_ids=tuple(e.event_id for e in earlier),
            )
        state = fold(envelope.order_id, history)
        try:
            decided = decide(state, envelope.command)
        except OrderRuleViolation as violation:
            return CommandOutcome(
                command_id=envelope.command_id,
                status="rejected",
                order_id=envelope.order_id,
                version=state.version,
                reason=violation.message,
                rule=violation.rule,
            )
        now = self._clock()
        metadata = {
            "command_id": envelope.command_id,
            "correlation_id": envelope.correlation_id,
            "causation_id": envelope.causation_id,
        }
        new_events = [
            NewEvent(
                event_id=event_id_for(stream_id, envelope.command_id, index),
                type=event_type_name(event),
                data=event_to_data(event),
                occurred_at=now,
                schema_version=CURRENT_SCHEMA_VERSION[event_type_name(event)],
                metadata=metadata,
            )
            for index, event in enumerate(decided)
        ]
        result = await self._store.append(stream_id, state.version, new_events)
        return CommandOutcome(
            command_id=envelope.command_id,
            status="accepted",
            order_id=envelope.order_id,
            version=result.version,
            event_ids=tuple(e.event_id for e in new_events),
        )


def _events_of_command(history: list[RecordedEvent], command_id: str) -> list[RecordedEvent]:
    return [e for e in history if e.metadata.get("command_id") == command_id]
