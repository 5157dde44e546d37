"""Commands: what a caller asks the Order aggregate to do. They carry intent, not validity."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class CreateOrder:
    order_id: str
    customer_id: str


@dataclass(frozen=True, slots=True)
class AddItem:
    order_id: str
    sku: str
    quantity: int
    unit_price: Decimal
    currency: str | None = None
    """ISO 4217 code; None: the order's currency, or the shop's default for its first item
    (`decide`'s `default_currency`, bound to the setting by the composition root)."""


@dataclass(frozen=True, slots=True)
class RemoveItem:
    order_id: str
    sku: str


@dataclass(frozen=True, slots=True)
class ConfirmOrder:
    order_id: str


@dataclass(frozen=True, slots=True)
class CancelOrder:
    order_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class FulfilOrder:
    """Sent by the fulfilment workflow once payment is authorized and stock committed."""

    order_id: str


Command = CreateOrder | AddItem | RemoveItem | ConfirmOrder | CancelOrder | FulfilOrder

COMMAND_TYPES: dict[str, type[Command]] = {
    cls.__name__: cls
    for cls in (CreateOrder, AddItem, RemoveItem, ConfirmOrder, CancelOrder, FulfilOrder)
}
