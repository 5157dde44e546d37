"""The public contract of integration events: what other services consume.

Integration events are deliberately separate from domain events: the domain may rename or
reshape its events, and this module maps them onto a stable, versioned contract. Every
event also names the order's customer (`customer_id`), so consumers never need to look
the order up to route or group by customer.

Published on the durable topic exchange `conveyor.events`; AMQP `message_id` = event_id,
`type` = the event type, content type application/json, persistent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from conveyor.application.streams import order_id_of
from conveyor.eventstore.port import RecordedEvent

EVENTS_EXCHANGE = "conveyor.events"
CONTRACT_VERSION = 1

ROUTING_KEYS: dict[str, str] = {
    "OrderCreated": "orders.created",
    "ItemAdded": "orders.item-added",
    "ItemRemoved": "orders.item-removed",
    "OrderConfirmed": "orders.confirmed",
    "OrderCancelled": "orders.cancelled",
}

DecimalText = Annotated[
    str, Field(pattern=r"^-?\d+(\.\d+)?$", max_length=40, description="A decimal as text")
]
# Bounded like the commands they come from (messaging/command_messages.py): a consumer
# never holds more than a few KB per event.
Id = Annotated[str, Field(max_length=255)]  # an AMQP short string: what any stored id fits in
Reason = Annotated[str, Field(max_length=2000)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class OrderCreatedData(_Data):
    customer_id: Id


class ItemAddedData(_Data):
    sku: Id
    quantity: int = Field(ge=-(10**9), le=10**9)
    unit_price: DecimalText


class ItemRemovedData(_Data):
    sku: Id


class OrderConfirmedData(_Data):
    total: DecimalText


class OrderCancelledData(_Data):
    reason: Reason


class _IntegrationEvent(BaseModel):
    # Consumers ignore fields they do not know: the contract may grow without a new version.
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: UUID
    schema_version: int = Field(ge=1)
    order_id: Id
    customer_id: Id
    version: int = Field(ge=1, le=2**53, description="The order's version after this event")
    occurred_at: datetime
    correlation_id: Id | None = None
    causation_id: Id | None = None

    @property
    def routing_key(self) -> str:
        return ROUTING_KEYS[self.type]  # type: ignore[attr-defined]


class OrderCreatedEvent(_IntegrationEvent):
    type: Literal["OrderCreated"]
    data: OrderCreatedData


class ItemAddedEvent(_IntegrationEvent):
    type: Literal["ItemAdded"]
    data: ItemAddedData


class ItemRemovedEvent(_IntegrationEvent):
    type: Literal["ItemRemoved"]
    data: ItemRemovedData


class OrderConfirmedEvent(_IntegrationEvent):
    type: Literal["OrderConfirmed"]
    data: OrderConfirmedData


class OrderCancelledEvent(_IntegrationEvent):
    type: Literal["OrderCancelled"]
    data: OrderCancelledData


IntegrationEvent = (
    OrderCreatedEvent
    | ItemAddedEvent
    | ItemRemovedEvent
    | OrderConfirmedEvent
    | OrderCancelledEvent
)
INTEGRATION_EVENT: TypeAdapter[IntegrationEvent] = TypeAdapter(
    Annotated[IntegrationEvent, Field(discriminator="type")]
)


class NotAnIntegrationEvent(ValueError):
    """A stored event with no public counterpart, or an invalid integration message."""


def to_integration_event(event: RecordedEvent, customer_id: str) -> IntegrationEvent:
    """The public form of a stored domain event (schema version 1 of the contract)."""
    if event.type not in ROUTING_KEYS:
        raise NotAnIntegrationEvent(f"event type {event.type!r} has no integration contract")
    data: dict[str, Any] = dict(event.data)
    return INTEGRATION_EVENT.validate_python(
        {
            "event_id": event.event_id,
            "type": event.type,
            "schema_version": CONTRACT_VERSION,
            "order_id": order_id_of(event.stream_id),
            "customer_id": customer_id,
            "version": event.version,
            "occurred_at": event.occurred_at,
            "correlation_id": event.metadata.get("correlation_id"),
            "causation_id": event.metadata.get("causation_id"),
            "data": data,
        }
    )


def encode(event: IntegrationEvent) -> bytes:
    return event.model_dump_json().encode()


def decode(body: bytes) -> IntegrationEvent:
    try:
        return INTEGRATION_EVENT.validate_json(body)
    except ValueError as exc:
        raise NotAnIntegrationEvent(str(exc)) from exc


def json_schema() -> Mapping[str, Any]:
    return INTEGRATION_EVENT.json_schema()
