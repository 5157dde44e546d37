"""Domain events of the Payment aggregate, and their codec (stored form: domain/codec.py)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from domain.codec import EventCodec


@dataclass(frozen=True, slots=True)
class PaymentRequested:
    amount: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class PaymentAuthorized:
    amount: Decimal
    provider_reference: str


@dataclass(frozen=True, slots=True)
class PaymentDeclined:
    reason: str


@dataclass(frozen=True, slots=True)
class PaymentRefunded:
    amount: Decimal
    reason: str


DomainEvent = PaymentRequested | PaymentAuthorized | PaymentDeclined | PaymentRefunded

CODEC: EventCodec[DomainEvent] = EventCodec(
    (PaymentRequested, PaymentAuthorized, PaymentDeclined, PaymentRefunded)
)

__all__ = [
    "CODEC",
    "DomainEvent",
    "PaymentAuthorized",
    "PaymentDeclined",
    "PaymentRefunded",
    "PaymentRequested",
]
