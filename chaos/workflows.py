"""The fulfilment checker: the business invariants of the order-fulfilment workflow, read
from the event store alone (the one source of truth), after the system has settled.

confirmed     orders with an `OrderConfirmed` event
unfinished    confirmed orders that ended neither fulfilled nor cancelled
oversold      SKUs whose available stock (on hand - reserved) went below zero at any
              point of their stream, folded event by event
stock drift   SKUs where Inventory's own fold disagrees with this independent count: its on
              hand is not received - committed, or its reserved is not the sum of the
              reservations still open
left reserved cancelled orders still holding a reservation, or with one committed (goods
              shipped for a cancelled order)
uncommitted   fulfilled orders with a reservation that was never committed
double reserve an (order, SKU) reserved more than once (a duplicated effect: the workflow
              derives one command id per line, so a redelivered event must not reserve again)
double charge orders whose payment was authorized or refunded more than once, a fulfilled
              order whose payment was refunded, or a cancelled order whose authorized
              payment was not refunded

The checker reads raw stored events by type name, not through the aggregates' code: a bug
in a fold must not hide itself from the checker.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from conveyor.aggregates import AGGREGATES
from conveyor.application.aggregates import is_marker
from conveyor.eventstore.port import RecordedEvent


@dataclass
class StockLevels:
    received: int = 0
    committed: int = 0
    reserved: int = 0
    lowest_available: int = 0
    open: dict[str, int] = field(default_factory=dict)

    @property
    def on_hand(self) -> int:
        return self.received - self.committed


@dataclass
class FulfilmentVerdict:
    confirmed: int = 0
    fulfilled: int = 0
    cancelled: int = 0
    unfinished: list[str] = field(default_factory=list)
    oversold: list[str] = field(default_factory=list)
    stock_drift: list[str] = field(default_factory=list)
    left_reserved: list[str] = field(default_factory=list)
    uncommitted: list[str] = field(default_factory=list)
    double_reserved: list[str] = field(default_factory=list)
    double_charged: list[str] = field(default_factory=list)
    cancel_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def problems(self) -> int:
        return sum(
            len(found)
            for found in (
                self.unfinished,
                self.oversold,
                self.stock_drift,
                self.left_reserved,
                self.uncommitted,
                self.double_reserved,
                self.double_charged,
            )
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "confirmed": self.confirmed,
            "fulfilled": self.fulfilled,
            "cancelled": self.cancelled,
            "cancel_reasons": dict(self.cancel_reasons.most_common()),
            "problems": self.problems,
            **{
                name: sorted(found)[:20]
                for name, found in (
                    ("unfinished", self.unfinished),
                    ("oversold", self.oversold),
                    ("stock_drift", self.stock_drift),
                    ("left_reserved", self.left_reserved),
                    ("uncommitted", self.uncommitted),
                    ("double_reserved", self.double_reserved),
                    ("double_charged", self.double_charged),
                )
            },
        }


def _reason_kind(reason: str) -> str:
    """ "stock unavailable: sku X" → "stock unavailable": reasons counted by kind."""
    return reason.split(":", 1)[0].strip() or reason


def check_fulfilment(events: Iterable[RecordedEvent]) -> FulfilmentVerdict:
    """Every invariant above, over the whole log in order."""
    verdict = FulfilmentVerdict()
    orders: dict[str, str] = {}  # order id -> "confirmed" | "fulfilled" | "cancelled"
    reasons: dict[str, str] = {}
    stock: dict[str, StockLevels] = defaultdict(StockLevels)  # by SKU stream
    reservations: Counter[tuple[str, str]] = Counter()
    committed: set[tuple[str, str]] = set()
    authorized: Counter[str] = Counter()
    refunded: Counter[str] = Counter()
    streams: dict[str, list[RecordedEvent]] = defaultdict(list)  # for the aggregates' folds
    for event in events:
        if is_marker(event):
            continue
        definition = AGGREGATES.of_stream(event.stream_id)
        if definition is None:
            continue
        streams[event.stream_id].append(event)
        aggregate_id = definition.aggregate_id_of(event.stream_id)
        data = event.data
        match event.type:
            case "OrderConfirmed":
                orders[aggregate_id] = "confirmed"
            case "OrderFulfilled":
                orders[aggregate_id] = "fulfilled"
            case "OrderCancelled" if aggregate_id in orders:
                orders[aggregate_id] = "cancelled"
                reasons[aggregate_id] = str(data.get("reason", ""))
            case "StockReceived":
                levels = stock[event.stream_id]
                levels.received += int(data["quantity"])
            case "StockReserved":
                levels, order_id = stock[event.stream_id], str(data["order_id"])
                levels.reserved += int(data["quantity"])
                levels.open[order_id] = int(data["quantity"])
                levels.lowest_available = min(
                    levels.lowest_available, levels.on_hand - levels.reserved
                )
                reservations[(order_id, aggregate_id)] += 1
            case "ReservationReleased":
                levels = stock[event.stream_id]
                levels.reserved -= levels.open.pop(str(data["order_id"]), 0)
            case "ReservationCommitted":
                levels, order_id = stock[event.stream_id], str(data["order_id"])
                quantity = levels.open.pop(order_id, 0)
                levels.reserved -= quantity
                levels.committed += quantity
                committed.add((order_id, aggregate_id))
            case "PaymentAuthorized":
                authorized[aggregate_id] += 1
            case "PaymentRefunded":
                refunded[aggregate_id] += 1
    verdict.confirmed = len(orders)
    for order_id, status in orders.items():
        if status == "fulfilled":
            verdict.fulfilled += 1
        elif status == "cancelled":
            verdict.cancelled += 1
            verdict.cancel_reasons[_reason_kind(reasons[order_id])] += 1
        else:
            verdict.unfinished.append(order_id)
    for stream_id, levels in stock.items():
        definition = AGGREGATES.of_stream(stream_id)
        assert definition is not None
        sku = definition.aggregate_id_of(stream_id)
        if levels.lowest_available < 0:
            verdict.oversold.append(sku)
        state = definition.fold(sku, streams[stream_id])
        if (state.on_hand, state.reserved) != (levels.on_hand, sum(levels.open.values())):
            verdict.stock_drift.append(sku)
        for order_id in levels.open:
            if orders.get(order_id) == "cancelled":
                verdict.left_reserved.append(f"{order_id}/{sku}")
            elif orders.get(order_id) == "fulfilled":
                verdict.uncommitted.append(f"{order_id}/{sku}")
    for order_id, sku in committed:
        if orders.get(order_id) == "cancelled":
            verdict.left_reserved.append(f"{order_id}/{sku} (committed)")
    verdict.double_reserved = [f"{o}/{s}" for (o, s), n in reservations.items() if n > 1]
    for order_id in set(authorized) | set(refunded):
        final = orders.get(order_id)
        if authorized[order_id] > 1 or refunded[order_id] > 1:
            verdict.double_charged.append(order_id)
        elif final == "fulfilled" and refunded[order_id]:
            verdict.double_charged.append(f"{order_id} (fulfilled, refunded)")
        elif final == "cancelled" and authorized[order_id] > refunded[order_id]:
            verdict.double_charged.append(f"{order_id} (cancelled, not refunded)")
    return verdict
