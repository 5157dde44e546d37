"""What the shared machinery knows about an aggregate: its definition, looked up in a registry.

An `AggregateDefinition` describes one aggregate once — stream prefix, commands and how to
parse them off the wire, its event codec, initial state / evolve / decide (pure, from
`domain/`), its rule violations, its command queue, its integration contract and its read
models. The command handler, command parsing, the gateway, rebuilds, history, status, the
AsyncAPI document and the CLI take a `Registry` of definitions and name no aggregate.

The definitions themselves live in `conveyor/aggregates/` (one module per aggregate, one
registration line in its `__init__`): they bind `domain/` to `messaging/contracts/`, which
sit above this layer, so this module only describes their shape.

Versions. A stream may hold, besides the aggregate's domain events, the handler's rejection
markers (conveyor/application/rejections.py). The *aggregate version* — what outcomes,
integration events, read models and history report — counts domain events only; the
stream version counts both and is used only for optimistic concurrency. A domain event whose
two versions differ carries its aggregate version in its metadata (`aggregate_version`);
absent means equal, which is true of every event written before markers existed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, TypeAdapter

from conveyor.eventstore.port import RecordedEvent
from domain.codec import EventCodec
from domain.rules import RuleViolation
from domain.snapshots import SnapshotCodec

COMMAND_REJECTED = "CommandRejected"
"""The rejection marker's event type (conveyor/application/rejections.py); reserved: no
aggregate may have a domain event of that name."""
AGGREGATE_VERSION = "aggregate_version"
"""Metadata key: a domain event's aggregate version, written when it differs from the
stream version (rejection markers sit before it in the stream)."""


def aggregate_version(event: RecordedEvent) -> int:
    """The aggregate version of a stored domain event (domain events only, markers skipped)."""
    written = event.metadata.get(AGGREGATE_VERSION)
    return int(written) if written is not None else event.version


def is_marker(event: RecordedEvent) -> bool:
    return event.type == COMMAND_REJECTED


def repr_view(state: Any) -> Mapping[str, Any]:
    return {"repr": repr(state)}


@dataclass(frozen=True, slots=True, eq=False)
class IntegrationContract:
    """What an aggregate publishes on `conveyor.events`, and in which envelope.

    The envelope always holds event_id, type, schema_version, version, occurred_at,
    correlation_id, causation_id and data; the aggregate's id goes under `id_field`
    (`aggregate_id` for new aggregates; Order keeps `order_id`), and `aggregate_field`
    (when set) names the aggregate. `sticky` copies fields of the stream's first domain
    event into every envelope of that stream (Order: `customer_id` from OrderCreated)."""

    routing_keys: Mapping[str, str]
    """Event type → routing key; every key starts with `routing_key_prefix`."""
    routing_key_prefix: str
    events: Mapping[str, type[BaseModel]]
    """Event type → the pydantic model of its integration event (its JSON Schema)."""
    schema_versions: Mapping[str, int] = field(default_factory=dict)
    """Event type → the contract's schema version (1 when absent)."""
    id_field: str = "aggregate_id"
    aggregate_field: str | None = "aggregate"
    sticky: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """Envelope field → (event type, data field) of the stream's first domain event."""

    def schema_version(self, event_type: str) -> int:
        return self.schema_versions.get(event_type, 1)

    def __post_init__(self) -> None:
        for event_type, key in self.routing_keys.items():
            if not key.startswith(self.routing_key_prefix) or event_type not in self.events:
                raise ValueError(f"{event_type}: routing key {key!r} or model missing")


@dataclass(frozen=True, slots=True, eq=False)  # identity: one definition per aggregate
class AggregateDefinition:
    name: str
    """A stable name: `order` (AsyncAPI channels, `aggregate` in envelopes, CLI)."""
    stream_prefix: str
    """`order-`: the stream of aggregate X is `<prefix>X`."""
    command_queue: str
    """The aggregate's default command queue (`orders.commands`)."""
    id_field: str
    """The field of every command (wire and domain) that names the aggregate instance."""
    commands: Mapping[str, type[BaseModel]]
    """Wire type (the body's `type`) → its pydantic model; `model.to_command()` gives the
    domain command."""
    codec: EventCodec[Any]
    initial_state: Callable[[str], Any]
    evolve: Callable[[Any, Any], Any]
    decide: Callable[[Any, Any], Sequence[Any]]
    rule_violation: type[RuleViolation]
    contract: IntegrationContract
    state_view: Callable[[Any], Mapping[str, Any]] = repr_view
    """A JSON-able view of a state, for history (HTTP, CLI)."""
    read_models: tuple[str, ...] = ()
    """The projections (read models) fed by this aggregate's integration events."""
    legacy_rejections: bool = False
    """Rejection records of earlier versions exist in `rejections-…` streams (Order only)."""
    snapshots: SnapshotCodec[Any, Any] | None = None
    """How the state is kept as a snapshot (domain/, pure), for long-lived streams."""
    snapshot_every: int | None = None
    """Opt-in: keep a snapshot each time the stream has grown by this many events since the
    last one (needs `snapshots`). None: every load folds the whole stream."""
    command_message: TypeAdapter[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.snapshot_every is not None and (self.snapshot_every < 1 or not self.snapshots):
            raise ValueError(f"{self.name}: snapshot_every needs snapshots and must be >= 1")
        if self.codec.knows(COMMAND_REJECTED):
            raise ValueError(f"{self.name}: {COMMAND_REJECTED} is reserved for rejection markers")
        union: Any = tuple(self.commands.values())
        form: Any = (
            Annotated[Union[union], Field(discriminator="type")]  # noqa: UP007
            if len(union) > 1
            else union[0]
        )
        adapter: TypeAdapter[Any] = TypeAdapter(form)
        object.__setattr__(self, "command_message", adapter)

    def stream(self, aggregate_id: str) -> str:
        return f"{self.stream_prefix}{aggregate_id}"

    def owns(self, stream_id: str) -> bool:
        return stream_id.startswith(self.stream_prefix)

    def aggregate_id_of(self, stream_id: str) -> str:
        return stream_id.removeprefix(self.stream_prefix)

    def id_of_command(self, command: Any) -> str:
        return str(getattr(command, self.id_field))

    def fold(self, aggregate_id: str, events: Iterable[RecordedEvent], *, state: Any = None) -> Any:
        """The state after the stream's domain events (rejection markers skipped), from
        `state` (a snapshot's) or the initial one."""
        decoded = (
            self.codec.from_data(event.type, event.schema_version, event.data)
            for event in events
            if not is_marker(event)
        )
        if state is None:
            state = self.initial_state(aggregate_id)
        if self.snapshots is not None:
            return self.snapshots.resume(state, decoded)
        for event in decoded:
            state = self.evolve(state, event)
        return state

    def publishes(self, event: RecordedEvent) -> bool:
        return self.owns(event.stream_id) and event.type in self.contract.routing_keys


class Registry:
    """Every aggregate of the application; lookups by name, stream, command or event."""

    def __init__(self, *definitions: AggregateDefinition) -> None:
        self._definitions = definitions
        self._by_name = {d.name: d for d in definitions}
        self._by_command: dict[str, AggregateDefinition] = {}
        self._by_event: dict[str, AggregateDefinition] = {}
        for definition in definitions:
            for wire_type in definition.commands:
                if self._by_command.setdefault(wire_type, definition) is not definition:
                    raise ValueError(f"command type {wire_type!r} registered twice")
            for event_type in definition.contract.routing_keys:
                if self._by_event.setdefault(event_type, definition) is not definition:
                    raise ValueError(f"integration event type {event_type!r} registered twice")
        if len(self._by_name) != len(definitions):
            raise ValueError("two aggregates share a name")
        prefixes = [d.stream_prefix for d in definitions]
        for a in prefixes:
            for b in prefixes:
                if a != b and b.startswith(a):
                    raise ValueError(f"stream prefixes {a!r} and {b!r} overlap")

    def __iter__(self) -> Iterator[AggregateDefinition]:
        return iter(self._definitions)

    def __len__(self) -> int:
        return len(self._definitions)

    @property
    def default(self) -> AggregateDefinition:
        """The first registered aggregate (where options without an aggregate apply)."""
        return self._definitions[0]

    def named(self, name: str) -> AggregateDefinition:
        try:
            return self._by_name[name]
        except KeyError:
            raise LookupError(
                f"no aggregate named {name!r}; registered: {', '.join(self._by_name)}"
            ) from None

    def of_stream(self, stream_id: str) -> AggregateDefinition | None:
        for definition in self._definitions:
            if definition.owns(stream_id):
                return definition
        return None

    def of_command_type(self, wire_type: str) -> AggregateDefinition | None:
        return self._by_command.get(wire_type)

    def of_event_type(self, event_type: str) -> AggregateDefinition | None:
        return self._by_event.get(event_type)

    def publisher_of(self, event: RecordedEvent) -> AggregateDefinition | None:
        """The aggregate whose integration contract covers this stored event, else None —
        the one check of "is this an event with an integration contract" (rejection
        markers, other applications' streams and uncontracted types all answer None)."""
        definition = self.of_stream(event.stream_id)
        if definition is not None and event.type in definition.contract.routing_keys:
            return definition
        return None

    def routing_key_prefixes(self) -> list[str]:
        return [d.contract.routing_key_prefix for d in self._definitions]
