"""Domain events of the Inventory aggregate, and their codec (stored form: domain/codec.py)."""

from __future__ import annotations

from dataclasses import dataclass

from domain.codec import EventCodec


@dataclass(frozen=True, slots=True)
class StockReceived:
    quantity: int


@dataclass(frozen=True, slots=True)
class StockReserved:
    order_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class ReservationRefused:
    """A reservation asked for more than was available: a fact the workflow reacts to (the
    event store is the outbox; a rejection would be a transient outcome it never sees)."""

    order_id: str
    sku: str
    requested: int
    available: int


@dataclass(frozen=True, slots=True)
class ReservationReleased:
    order_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class ReservationCommitted:
    order_id: str
    quantity: int


DomainEvent = (
    StockReceived | StockReserved | ReservationRefused | ReservationReleased | ReservationCommitted
)

CODEC: EventCodec[DomainEvent] = EventCodec(
    (StockReceived, StockReserved, ReservationRefused, ReservationReleased, ReservationCommitted)
)

__all__ = [
    "CODEC",
    "DomainEvent",
    "ReservationCommitted",
    "ReservationRefused",
    "ReservationReleased",
    "StockReceived",
    "StockReserved",
]
