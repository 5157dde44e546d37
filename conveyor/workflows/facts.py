"""Integration events (and the process manager's own timeouts) read as workflow inputs.

A tolerant reader: it takes the few envelope fields the workflow needs and ignores the rest,
as every consumer of `conveyor.events` should. Order's envelope names the order `order_id`;
Inventory's (one stream per SKU) names the SKU `aggregate_id` and carries the order in its
data; Payment's (one stream per order) names the order `aggregate_id`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conveyor.workflows.sending import TIMED_OUT
from domain.fulfilment.inputs import (
    FulfilmentTimedOut,
    Input,
    OrderCancelled,
    OrderFulfilled,
    PaymentAuthorized,
    PaymentDeclined,
    ReservationRefused,
    StockReserved,
)

ORDER_CONFIRMED = "OrderConfirmed"
INPUT_TYPES = (
    ORDER_CONFIRMED,
    "StockReserved",
    "ReservationRefused",
    "PaymentAuthorized",
    "PaymentDeclined",
    "OrderCancelled",
    "OrderFulfilled",
    TIMED_OUT,
)


class InvalidInput(ValueError):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    event_id: str = Field(min_length=1, max_length=200)
    occurred_at: datetime | None = None
    order_id: str | None = Field(default=None, min_length=1, max_length=200)
    aggregate_id: str | None = Field(default=None, min_length=1, max_length=200)
    data: dict[str, Any] = Field(default_factory=dict)
    token: str | None = None
    scheduled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PendingConfirmation:
    """`orders.confirmed` carries only the total: the lines come from the event store."""

    event_id: str
    occurred_at: datetime
    order_id: str


def parse_input(body: bytes, *, max_bytes: int) -> Input | PendingConfirmation | None:
    """The workflow input this message stands for; None for an event type the workflow does
    not react to (acked and ignored). Raises InvalidInput for a malformed message."""
    if len(body) > max_bytes:
        raise InvalidInput("MessageTooLarge", f"{len(body)} bytes, over the {max_bytes} limit")
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput("InvalidJson", f"not JSON: {exc}") from None
    if not isinstance(raw, Mapping) or raw.get("type") not in INPUT_TYPES:
        return None if isinstance(raw, Mapping) else _invalid("not a JSON object")
    try:
        envelope = _Envelope.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput("SchemaError", str(exc)) from None
    data = envelope.data
    at = envelope.occurred_at or envelope.scheduled_at
    if at is None:
        raise InvalidInput("SchemaError", f"{envelope.type} without occurred_at")
    try:
        match envelope.type:
            case "OrderConfirmed":
                return PendingConfirmation(envelope.event_id, at, _order(envelope))
            case "StockReserved":
                return StockReserved(
                    envelope.event_id,
                    at,
                    _order(envelope, in_data=True),
                    _sku(envelope),
                    int(data["quantity"]),
                )
            case "ReservationRefused":
                return ReservationRefused(
                    envelope.event_id,
                    at,
                    _order(envelope, in_data=True),
                    _sku(envelope),
                    _refusal(data),
                )
            case "PaymentAuthorized":
                return PaymentAuthorized(envelope.event_id, at, _order(envelope))
            case "PaymentDeclined":
                return PaymentDeclined(
                    envelope.event_id, at, _order(envelope), str(data.get("reason") or "")
                )
            case "OrderCancelled":
                return OrderCancelled(
                    envelope.event_id, at, _order(envelope), str(data.get("reason") or "")
                )
            case "OrderFulfilled":
                return OrderFulfilled(envelope.event_id, at, _order(envelope))
            case _:  # TIMED_OUT
                if not envelope.token:
                    _invalid("a timeout without its token")
                return FulfilmentTimedOut(
                    envelope.event_id, at, _order(envelope), str(envelope.token)
                )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput("SchemaError", f"{envelope.type}: {exc!r}") from None


def _order(envelope: _Envelope, *, in_data: bool = False) -> str:
    order_id = (
        envelope.data.get("order_id")
        if in_data
        else envelope.order_id or envelope.data.get("order_id") or envelope.aggregate_id
    )
    if not isinstance(order_id, str) or not order_id:
        _invalid(f"{envelope.type} names no order")
    return str(order_id)


def _sku(envelope: _Envelope) -> str:
    sku = envelope.data.get("sku") or envelope.aggregate_id
    if not isinstance(sku, str) or not sku:
        _invalid(f"{envelope.type} names no SKU")
    return str(sku)


def _refusal(data: Mapping[str, Any]) -> str:
    if "requested" in data and "available" in data:
        return f"requested {data['requested']}, available {data['available']}"
    return str(data.get("reason") or "insufficient stock")


def _invalid(message: str) -> Any:
    raise InvalidInput("SchemaError", message)
