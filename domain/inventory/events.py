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
class ReservationReleased:
    order_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class ReservationCommitted:
    order_id: str
    quantity: int


DomainEvent = StockReceived | StockReserved | ReservationReleased | ReservationCommitted

CODEC: EventCodec[DomainEvent] = EventCodec(
    (StockReceived, StockReserved, ReservationReleased, ReservationCommitted)
)

__all__ = [
    "CODEC",
    "DomainEvent",
    "ReservationCommitted",
    "ReservationReleased",
    "StockReceived",
    "StockReserved",
]
