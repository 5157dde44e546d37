"""Commands: what the workflow or the payment provider asks an order's Payment to do."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

DEFAULT_CURRENCY = "EUR"


@dataclass(frozen=True, slots=True)
class RequestPayment:
    """Sent by the fulfilment workflow once every line's stock is reserved."""

    order_id: str
    amount: Decimal
    currency: str = DEFAULT_CURRENCY


@dataclass(frozen=True, slots=True)
class AuthorizePayment:
    """Sent by the payment provider."""

    order_id: str
    amount: Decimal
    provider_reference: str


@dataclass(frozen=True, slots=True)
class DeclinePayment:
    """Sent by the payment provider."""

    order_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class RefundPayment:
    order_id: str
    reason: str


Command = RequestPayment | AuthorizePayment | DeclinePayment | RefundPayment

COMMAND_TYPES: dict[str, type[Command]] = {
    cls.__name__: cls for cls in (RequestPayment, AuthorizePayment, DeclinePayment, RefundPayment)
}
