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

A rejection is recorded too (conveyor/application/rejections.py), before its outcome is published,
in a stream of its own per command: a command seen again is answered from that record
instead of being decided again against newer state. The record is consulted before every
decision — one read of a stream holding at most one event, so cheap whatever the order's
history — which also covers a client that resends a rejected command under the same
command_id as a fresh message (it used to be checked only on deliveries flagged as seen
before, and such a resend could be accepted after its rejection). Two copies rejecting at
once append at "no stream": one record wins, the other copy replays it.

Not closed yet: an acceptance and a rejection of *one* command decided at the same moment
by two processes against different states of the order (say a resend racing the original
across a CreateOrder) write to two different streams and can both succeed. Closing that
needs the rejection in the order stream itself, at the expected version (README).
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

from conveyor.application.locks import KeyedLocks
from conveyor.application.rejections import (
    COMMAND_REJECTED,
    COMMAND_REJECTED_SCHEMA_VERSION,
    StoredRejection,
    legacy_rejection_stream,
    rejection_of,
    rejection_stream,
)
from conveyor.application.streams import fold, order_stream
from conveyor.eventstore.port import (
    NO_STREAM,
    ConcurrencyError,
    EventStore,
    NewEvent,
    RecordedEvent,
)
from domain.orders.commands import Command
from domain.orders.events import CURRENT_SCHEMA_VERSION, event_to_data, event_type_name
from domain.orders.order import decide
from domain.rules import RuleViolation

EVENT_ID_NAMESPACE = uuid.UUID("6f1d7a3c-3b0e-4c8e-9a51-7f0c2f7e9b10")

Status = Literal["accepted", "duplicate", "rejected"]


@dataclass(frozen=True, slots=True)
class CommandEnvelope:
    command: Command
    command_id: str
    correlation_id: str
    causation_id: str
    seen_before: bool = False
    """This delivery may have been handled already (a broker redelivery, a retry copy, a
    re-driven dead letter): also look where earlier versions recorded rejections."""

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
    replayed: bool = False
    """A rejection answered from its record (the command was seen before): the message is
    the original one, identical in body and message_id."""

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
                    # A reload after a conflict may be racing another copy of this command.
                    suspect = envelope.seen_before or attempt.retry_state.attempt_number > 1
                    return await self._handle_once(envelope, suspect)
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def _handle_once(self, envelope: CommandEnvelope, seen_before: bool) -> CommandOutcome:
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
        stored = await self._recorded_rejection(envelope, seen_before)
        if stored is not None:
            return _rejected(envelope, stored, replayed=True)
        state = fold(envelope.order_id, history)
        metadata = {
            "command_id": envelope.command_id,
            "correlation_id": envelope.correlation_id,
            "causation_id": envelope.causation_id,
        }
        try:
            decided = decide(state, envelope.command)
        except RuleViolation as violation:
            return await self._record_rejection(envelope, state.version, violation, metadata)
        now = self._clock()
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

    async def _recorded_rejection(
        self, envelope: CommandEnvelope, seen_before: bool
    ) -> StoredRejection | None:
        stream_id = rejection_stream(envelope.order_id, envelope.command_id)
        stored = rejection_of(await self._store.read_stream(stream_id), envelope.command_id)
        if stored is None and seen_before:  # a record an earlier version may have written
            legacy = await self._store.read_stream(legacy_rejection_stream(envelope.order_id))
            stored = rejection_of(legacy, envelope.command_id)
        return stored

    async def _record_rejection(
        self,
        envelope: CommandEnvelope,
        order_version: int,
        violation: RuleViolation,
        metadata: dict[str, str],
    ) -> CommandOutcome:
        """Append CommandRejected before the outcome can be published. The record is the
        command's own stream, appended at "no stream": a racing copy that recorded it first
        makes this a ConcurrencyError (or a duplicate event id), and `handle` reloads, finds
        that record and replays it."""
        stream_id = rejection_stream(envelope.order_id, envelope.command_id)
        rejection = StoredRejection(
            command_id=envelope.command_id,
            rule=violation.rule,
            reason=violation.message,
            version=order_version,
            event_id=event_id_for(stream_id, envelope.command_id, 0),
        )
        record = NewEvent(
            event_id=rejection.event_id,
            type=COMMAND_REJECTED,
            data=rejection.as_data(),
            occurred_at=self._clock(),
            schema_version=COMMAND_REJECTED_SCHEMA_VERSION,
            metadata=metadata,
        )
        await self._store.append(stream_id, NO_STREAM, [record])
        return _rejected(envelope, rejection, replayed=False)


def _rejected(
    envelope: CommandEnvelope, rejection: StoredRejection, *, replayed: bool
) -> CommandOutcome:
    return CommandOutcome(
        command_id=envelope.command_id,
        status="rejected",
        order_id=envelope.order_id,
        version=rejection.version,
        reason=rejection.reason,
        rule=rejection.rule,
        replayed=replayed,
    )


def _events_of_command(history: list[RecordedEvent], command_id: str) -> list[RecordedEvent]:
    return [e for e in history if e.metadata.get("command_id") == command_id]
