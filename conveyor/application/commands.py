"""Handling one command: load → (already done?) → decide → append, exactly once in effect.

The handler knows no aggregate: the command's definition (conveyor/application/aggregates.py,
looked up in the registry) gives its stream, its fold and its decide.

Idempotency is designed in two layers:
* every event carries its command's `command_id`; before deciding, the handler looks for
  it in the loaded stream and, if found, reports the original outcome ("duplicate" for
  events, "rejected" again for a rejection marker) and appends nothing;
* event ids are derived from (stream, command_id, index), so two racing deliveries of one
  command produce the same ids — the store's unique event id rejects the loser, which
  reloads, finds the command in the stream and reports that.
Commands for one aggregate are serialised within a process (a lock per stream), so
conflicts only arise between processes. A version conflict is retried here with jittered
backoff; if conflicts outlast that, the ConcurrencyError escapes as a transient failure.

A rejection is appended to the aggregate's own stream as a marker, at the version it was
decided against, before its outcome is published (conveyor/application/rejections.py): an
acceptance and a rejection of one command contend on one stream, so at most one of them
is ever stored, and a resend — whatever its delivery flags — finds the marker in the
stream it loads anyway. The aggregate version reported counts domain events only.

Snapshots (aggregates that opt in, conveyor/application/loading.py) change what "the
loaded stream" is: the latest snapshot and the tail after it, so the events of a command
older than the snapshot are not read. Dedupe stays exact this way:
* a delivery that may have been handled before (`seen_before`: a broker redelivery, a retry
  copy, a re-driven dead letter) and every reload after a conflict ignore the snapshot and
  read the whole stream, as without snapshots — these are where duplicates come from, and
  they pay a full fold only then;
* a fresh message can still be a duplicate (a client resending a command under its
  command_id after a lost confirm, a second copy racing the first): the snapshot keeps the
  ids of the last RECENT_COMMANDS commands it covers, and a command found there is
  answered from a whole-stream read; one in the tail is found there;
* a copy that slips past both (racing across a snapshot being taken) decides at the same
  expected version with the same deterministic event ids as the original: the append
  conflicts, and the reload — whole, being a retry — finds the original and answers it.
What remains: a resend, not flagged as one, of a command older than the last
RECENT_COMMANDS commands before the snapshot is decided again (KurrentDB would take its
events at the new version). Resends come within seconds; re-drives are flagged.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from conveyor.application.aggregates import (
    AGGREGATE_VERSION,
    AggregateDefinition,
    Registry,
    aggregate_version,
)
from conveyor.application.loading import AggregateLoader
from conveyor.application.locks import KeyedLocks
from conveyor.application.rejections import (
    COMMAND_REJECTED,
    COMMAND_REJECTED_SCHEMA_VERSION,
    StoredRejection,
    legacy_rejection_stream,
    rejection_of,
    rejection_stream,
)
from conveyor.eventstore.port import ConcurrencyError, EventStore, NewEvent, RecordedEvent

EVENT_ID_NAMESPACE = uuid.UUID("6f1d7a3c-3b0e-4c8e-9a51-7f0c2f7e9b10")

Status = Literal["accepted", "duplicate", "rejected"]


@dataclass(frozen=True, slots=True)
class CommandEnvelope:
    command: Any
    """A domain command of a registered aggregate."""
    command_id: str
    correlation_id: str
    causation_id: str
    seen_before: bool = False
    """This delivery may have been handled already (a broker redelivery, a retry copy, a
    re-driven dead letter): the handler then reads the aggregate's whole stream, not only
    the tail after its snapshot."""
    aggregate: str | None = None
    """The aggregate's registered name (set by parsing); None: found by the command's type."""
    aggregate_id: str | None = None
    """The aggregate instance the command addresses (set by parsing); None: read from the
    command's id field (the definition's `id_field`)."""


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    command_id: str
    status: Status
    aggregate_id: str
    version: int
    """The aggregate version (domain events only) after the command, or at its rejection."""
    reason: str | None = None
    rule: str | None = None
    event_ids: tuple[uuid.UUID, ...] = field(default=())
    replayed: bool = False
    """A rejection answered from its record (the command was seen before): the message is
    the original one, identical in body and message_id."""
    id_field: str = "aggregate_id"
    """How the aggregate's commands name its id (`order_id`): the outcome uses the same."""
    routing_key_prefix: str = ""
    """The aggregate's routing-key prefix (`orders.`): outcomes go out as
    `<prefix>command.<status>`."""

    def as_message(self) -> dict[str, object]:
        message: dict[str, object] = {
            "command_id": self.command_id,
            "status": self.status,
            self.id_field: self.aggregate_id,
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
        aggregates: Registry,
        *,
        conflict_attempts: int = 10,
        clock: Callable[[], datetime] = _utcnow,
        snapshot_writers: int = 4,
    ) -> None:
        self._store = store
        self._aggregates = aggregates
        self._conflict_attempts = conflict_attempts
        self._clock = clock
        self._locks = KeyedLocks()
        self.loader = AggregateLoader(store, clock=clock, max_writers=snapshot_writers)

    def definition_of(self, envelope: CommandEnvelope) -> AggregateDefinition:
        if envelope.aggregate is not None:
            return self._aggregates.named(envelope.aggregate)
        definition = self._aggregates.of_command_type(type(envelope.command).__name__)
        if definition is None:
            raise LookupError(f"no registered aggregate handles {type(envelope.command).__name__}")
        return definition

    async def handle(self, envelope: CommandEnvelope) -> CommandOutcome:
        definition = self.definition_of(envelope)
        aggregate_id = envelope.aggregate_id or definition.id_of_command(envelope.command)
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ConcurrencyError),
            stop=stop_after_attempt(self._conflict_attempts),
            wait=wait_random_exponential(multiplier=0.01, max=0.5),
            reraise=True,
        )
        async with self._locks.hold(definition.stream(aggregate_id)):
            async for attempt in retrying:
                with attempt:
                    # A reload after a conflict may be racing another copy of this command:
                    # like a redelivery, it reads the whole stream, not the snapshot's tail.
                    suspect = envelope.seen_before or attempt.retry_state.attempt_number > 1
                    return await self._handle_once(definition, aggregate_id, envelope, suspect)
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def _handle_once(
        self,
        definition: AggregateDefinition,
        aggregate_id: str,
        envelope: CommandEnvelope,
        seen_before: bool,
    ) -> CommandOutcome:
        stream_id = definition.stream(aggregate_id)
        loaded = await self.loader.load(definition, aggregate_id, whole=seen_before)
        if loaded.base is not None and envelope.command_id in loaded.base.recent_command_ids:
            # Handled before the snapshot: answer from the events themselves.
            loaded = await self.loader.load(definition, aggregate_id, whole=True)
        history = loaded.events
        outcome = _Outcomes(definition, aggregate_id, envelope.command_id)
        earlier = [e for e in history if e.metadata.get("command_id") == envelope.command_id]
        recorded = rejection_of(earlier, envelope.command_id)
        if recorded is not None:  # rejected before, in this very stream: final
            return outcome.rejected(recorded, replayed=True)
        if earlier:
            return outcome.duplicate(earlier)
        if definition.legacy_rejections:
            stored = await self._legacy_rejection(aggregate_id, envelope)
            if stored is not None:
                return outcome.rejected(stored, replayed=True)
        state = loaded.state
        domain_version = loaded.aggregate_version
        stream_version = loaded.stream_version
        metadata = {
            "command_id": envelope.command_id,
            "correlation_id": envelope.correlation_id,
            "causation_id": envelope.causation_id,
        }
        now = self._clock()
        try:
            decided = definition.decide(state, envelope.command)
        except definition.rule_violation as violation:  # the aggregate's own rules only
            rejection = StoredRejection(
                command_id=envelope.command_id,
                rule=violation.rule,
                reason=violation.message,
                version=domain_version,
                # The id the acceptance's first event would get: one command, one first event
                event_id=event_id_for(stream_id, envelope.command_id, 0),
            )
            marker = NewEvent(
                event_id=rejection.event_id,
                type=COMMAND_REJECTED,
                data=rejection.as_data(),
                occurred_at=now,
                schema_version=COMMAND_REJECTED_SCHEMA_VERSION,
                metadata=metadata,
            )
            # At the version decided against: a copy that appended anything since (its
            # acceptance, its own marker) makes this a conflict, and the reload answers.
            await self._store.append(stream_id, stream_version, [marker])
            self.loader.appended(
                definition,
                aggregate_id,
                loaded,
                state=state,
                aggregate_version=domain_version,
                stream_version=stream_version + 1,
                command_id=envelope.command_id,
            )
            return outcome.rejected(rejection, replayed=False)
        new_events = []
        for index, event in enumerate(decided):
            version = domain_version + index + 1
            event_metadata = dict(metadata)
            if version != stream_version + index + 1:  # markers before it in the stream
                event_metadata[AGGREGATE_VERSION] = str(version)
            new_events.append(
                NewEvent(
                    event_id=event_id_for(stream_id, envelope.command_id, index),
                    type=type(event).__name__,
                    data=definition.codec.to_data(event),
                    occurred_at=now,
                    schema_version=definition.codec.schema_version_of(event),
                    metadata=event_metadata,
                )
            )
        await self._store.append(stream_id, stream_version, new_events)
        if definition.snapshot_every is not None:
            self.loader.appended(
                definition,
                aggregate_id,
                loaded,
                state=_evolved(definition, state, decided),
                aggregate_version=domain_version + len(new_events),
                stream_version=stream_version + len(new_events),
                command_id=envelope.command_id,
            )
        return outcome.accepted(domain_version + len(new_events), new_events)

    async def _legacy_rejection(
        self, aggregate_id: str, envelope: CommandEnvelope
    ) -> StoredRejection | None:
        # Both earlier layouts, always and at once: a client may resend a command that an
        # old version rejected as a fresh message (no redelivery flag, no retry header),
        # and it must stay rejected (tests/integration/test_review_markers.py).
        per_command, per_aggregate = await asyncio.gather(
            self._store.read_stream(rejection_stream(aggregate_id, envelope.command_id)),
            self._store.read_stream(legacy_rejection_stream(aggregate_id)),
        )
        return rejection_of(per_command, envelope.command_id) or rejection_of(
            per_aggregate, envelope.command_id
        )


def _evolved(definition: AggregateDefinition, state: Any, events: Sequence[Any]) -> Any:
    if definition.snapshots is not None:
        return definition.snapshots.resume(state, events)
    for event in events:
        state = definition.evolve(state, event)
    return state


@dataclass(frozen=True, slots=True)
class _Outcomes:
    definition: AggregateDefinition
    aggregate_id: str
    command_id: str

    def _outcome(self, status: Status, version: int, **fields: Any) -> CommandOutcome:
        return CommandOutcome(
            command_id=self.command_id,
            status=status,
            aggregate_id=self.aggregate_id,
            version=version,
            id_field=self.definition.id_field,
            routing_key_prefix=self.definition.contract.routing_key_prefix,
            **fields,
        )

    def accepted(self, version: int, events: list[NewEvent]) -> CommandOutcome:
        return self._outcome("accepted", version, event_ids=tuple(e.event_id for e in events))

    def duplicate(self, earlier: list[RecordedEvent]) -> CommandOutcome:
        return self._outcome(
            "duplicate",
            aggregate_version(earlier[-1]),
            event_ids=tuple(e.event_id for e in earlier),
        )

    def rejected(self, rejection: StoredRejection, *, replayed: bool) -> CommandOutcome:
        return self._outcome(
            "rejected",
            rejection.version,
            reason=rejection.reason,
            rule=rejection.rule,
            replayed=replayed,
        )
