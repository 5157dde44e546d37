"""The Order aggregate's wire contract: its commands on `orders.commands` and its
integration events on `conveyor.events` (`orders.*`).

Both are public and versioned: the checked-in JSON Schemas (docs/schemas) are their oracle
(tests/unit/test_order_contract_compat.py). Order's envelope predates the generic one: it
names the aggregate by `order_id` and adds the order's customer (`customer_id`) to every
event, so consumers never look the order up to route or group by customer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from domain.orders.commands import (
    AddItem,
    CancelOrder,
    Command,
    ConfirmOrder,
    CreateOrder,
    FulfilOrder,
    RemoveItem,
)
from messaging.contracts.wire import (
    CommandMessage,
    DecimalText,
    EventData,
    Id,
    Identifier,
    Price,
    Quantity,
    Reason,
    Text,
)

COMMAND_QUEUE = "orders.commands"
ORDER_STREAM_PREFIX = "order-"
ROUTING_KEY_PREFIX = "orders."
CONTRACT_VERSION = 1
# ItemAdded gained `currency` (2026-12) without a new contract version: the field is
# additive and consumers ignore fields they do not know (README, "Changing an event's
# shape"). A change that removes, renames or retypes a field gets a new version instead.

Currency = Annotated[
    str,
    Field(
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217 currency code (three capital letters)",
        examples=["EUR"],
    ),
]


class _OrderCommandMessage(CommandMessage):
    order_id: Identifier

    def to_command(self) -> Command:
        raise NotImplementedError


class CreateOrderMessage(_OrderCommandMessage):
    type: Literal["CreateOrder"]
    customer_id: Identifier

    def to_command(self) -> Command:
        return CreateOrder(order_id=self.order_id, customer_id=self.customer_id)


class AddItemMessage(_OrderCommandMessage):
    type: Literal["AddItem"]
    sku: Identifier
    quantity: Quantity
    unit_price: Price
    currency: Currency | None = None
    """The price's currency; absent: the order's, or the shop's default for its first item."""

    def to_command(self) -> Command:
        return AddItem(
            order_id=self.order_id,
            sku=self.sku,
            quantity=self.quantity,
            unit_price=self.unit_price,
            currency=self.currency,
        )


class RemoveItemMessage(_OrderCommandMessage):
    type: Literal["RemoveItem"]
    sku: Identifier

    def to_command(self) -> Command:
        return RemoveItem(order_id=self.order_id, sku=self.sku)


class ConfirmOrderMessage(_OrderCommandMessage):
    type: Literal["ConfirmOrder"]

    def to_command(self) -> Command:
        return ConfirmOrder(order_id=self.order_id)


class CancelOrderMessage(_OrderCommandMessage):
    type: Literal["CancelOrder"]
    reason: Text

    def to_command(self) -> Command:
        return CancelOrder(order_id=self.order_id, reason=self.reason)


class FulfilOrderMessage(_OrderCommandMessage):
    """Sent by the fulfilment workflow once payment is authorized; the stock is committed
    when the order is fulfilled (a customer's cancellation may win the race instead)."""

    type: Literal["FulfilOrder"]

    def to_command(self) -> Command:
        return FulfilOrder(order_id=self.order_id)


COMMAND_MESSAGES: dict[str, type[CommandMessage]] = {
    "CreateOrder": CreateOrderMessage,
    "AddItem": AddItemMessage,
    "RemoveItem": RemoveItemMessage,
    "ConfirmOrder": ConfirmOrderMessage,
    "CancelOrder": CancelOrderMessage,
    "FulfilOrder": FulfilOrderMessage,
}

ROUTING_KEYS: dict[str, str] = {
    "OrderCreated": "orders.created",
    "ItemAdded": "orders.item-added",
    "ItemRemoved": "orders.item-removed",
    "OrderConfirmed": "orders.confirmed",
    "OrderCancelled": "orders.cancelled",
    "OrderFulfilled": "orders.fulfilled",
}


class OrderCreatedData(EventData):
    customer_id: Id


class ItemAddedData(EventData):
    sku: Id
    quantity: int = Field(ge=-(10**9), le=10**9)
    unit_price: DecimalText
    currency: Currency | None = Field(
        default=None,
        description="ISO 4217 code of unit_price. Always sent since 2026-12 (events stored "
        "before then are sent in the shop's default currency); absent only in messages "
        "published before.",
    )


class ItemRemovedData(EventData):
    sku: Id


class OrderConfirmedData(EventData):
    total: DecimalText


class OrderCancelledData(EventData):
    reason: Reason


class OrderFulfilledData(EventData):
    pass


class _OrderEvent(BaseModel):
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

    @property
    def aggregate_id(self) -> str:
        return self.order_id


class OrderCreatedEvent(_OrderEvent):
    type: Literal["OrderCreated"]
    data: OrderCreatedData


class ItemAddedEvent(_OrderEvent):
    type: Literal["ItemAdded"]
    data: ItemAddedData


class ItemRemovedEvent(_OrderEvent):
    type: Literal["ItemRemoved"]
    data: ItemRemovedData


class OrderConfirmedEvent(_OrderEvent):
    type: Literal["OrderConfirmed"]
    data: OrderConfirmedData


class OrderCancelledEvent(_OrderEvent):
    type: Literal["OrderCancelled"]
    data: OrderCancelledData


class OrderFulfilledEvent(_OrderEvent):
    type: Literal["OrderFulfilled"]
    data: OrderFulfilledData


OrderEvent = (
    OrderCreatedEvent
    | ItemAddedEvent
    | ItemRemovedEvent
    | OrderConfirmedEvent
    | OrderCancelledEvent
    | OrderFulfilledEvent
)
ORDER_EVENT: TypeAdapter[OrderEvent] = TypeAdapter(
    Annotated[OrderEvent, Field(discriminator="type")]
)
EVENT_MODELS: dict[str, type[_OrderEvent]] = {
    "OrderCreated": OrderCreatedEvent,
    "ItemAdded": ItemAddedEvent,
    "ItemRemoved": ItemRemovedEvent,
    "OrderConfirmed": OrderConfirmedEvent,
    "OrderCancelled": OrderCancelledEvent,
    "OrderFulfilled": OrderFulfilledEvent,
}
