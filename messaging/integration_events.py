"""The public contract of integration events: what other services consume.

Integration events are deliberately separate from domain events: the domain may rename or
reshape its events, and each aggregate's contract (messaging/contracts/<name>.py, bound in
its definition) maps them onto a stable, versioned form. This module knows no aggregate:
it builds the envelope a contract describes and reads any registered event back.

The envelope: event_id, type, schema_version, the aggregate's id (`aggregate_id`, or the
contract's own name for it — Order's `order_id`), `aggregate` (the aggregate's name, for
contracts that carry it), the contract's sticky fields (Order's `customer_id`), version
(the aggregate version: domain events only, see conveyor/application/aggregates.py),
occurred_at, correlation_id, causation_id, data.

Published on the durable topic exchange `conveyor.events`; AMQP `message_id` = event_id,
`type` = the event type, content type application/json, persistent.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, Any, Protocol, Union

from pydantic import BaseModel, Field, TypeAdapter

from conveyor.application.aggregates import AggregateDefinition, Registry, aggregate_version
from conveyor.eventstore.port import RecordedEvent

EVENTS_EXCHANGE = "conveyor.events"


class IntegrationEvent(Protocol):
    """What every integration event model offers (its fields vary with the contract)."""

    @property
    def event_id(self) -> Any: ...
    @property
    def type(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def routing_key(self) -> str: ...
    @property
    def aggregate_id(self) -> str: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def causation_id(self) -> str | None: ...
    def model_dump_json(self) -> str: ...


class NotAnIntegrationEvent(ValueError):
    """A stored event with no public counterpart, or an invalid integration message."""


def to_integration_event(
    event: RecordedEvent,
    definition: AggregateDefinition,
    sticky: Mapping[str, str] | None = None,
) -> Any:
    """The public form of a stored domain event of `definition`'s aggregate. `sticky`: the
    values of the contract's sticky fields for this stream."""
    contract = definition.contract
    model = contract.events.get(event.type)
    if model is None or not definition.owns(event.stream_id):
        raise NotAnIntegrationEvent(f"event type {event.type!r} has no integration contract")
    fields: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "schema_version": contract.schema_version(event.type),
        contract.id_field: definition.aggregate_id_of(event.stream_id),
        "version": aggregate_version(event),
        "occurred_at": event.occurred_at,
        "correlation_id": event.metadata.get("correlation_id"),
        "causation_id": event.metadata.get("causation_id"),
        "data": dict(event.data),
    }
    if contract.aggregate_field is not None:
        fields[contract.aggregate_field] = definition.name
    fields.update(sticky or {})
    try:
        return model.model_validate(fields)
    except ValueError as exc:
        raise NotAnIntegrationEvent(str(exc)) from exc


def encode(event: BaseModel | IntegrationEvent) -> bytes:
    return event.model_dump_json().encode()


@functools.cache
def _reader(aggregates: Registry) -> TypeAdapter[Any]:
    """One discriminated union over every registered integration event (types are unique
    across aggregates: the registry checks)."""
    models: Any = tuple(m for d in aggregates for m in d.contract.events.values())
    if len(models) == 1:
        return TypeAdapter(models[0])
    return TypeAdapter(Annotated[Union[models], Field(discriminator="type")])  # noqa: UP007


def decode(body: bytes, aggregates: Registry) -> Any:
    """Any registered aggregate's integration event, by its `type`."""
    try:
        return _reader(aggregates).validate_json(body)
    except ValueError as exc:
        raise NotAnIntegrationEvent(str(exc)) from exc


def json_schema(aggregates: Registry) -> Mapping[str, Any]:
    return _reader(aggregates).json_schema()
