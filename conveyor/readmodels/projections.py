"""The three projections, as pure functions of (document, integration event).

Every document is one order's (no document grows with a customer's history) and records
the order's `version` it has applied, and `apply` decides from that alone, so the guard and
the update travel in the same single-document compare-and-set (GUIDE §2):

    event.version <= applied          → Duplicate (acknowledge, change nothing)
    event.version == applied + 1      → Updated(new document)
    event.version >  applied + 1      → Gap (an earlier event is still on its way: retry)

Nothing applied yet counts as version 0, so only an order's first event (OrderCreated,
version 1) can create a document.

Documents are JSON-ready: amounts are decimal strings with two places, always computed with
Decimal; times are the events' `occurred_at` in a fixed-width UTC ISO 8601 form, so they
sort and compare as text. What depends on several orders (a customer's counts and totals)
is gathered at query time, so any delivery order that respects each order's own versions
ends in the same documents as a fold of the log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from json.encoder import encode_basestring as _quote
from typing import Any, Literal, Protocol, assert_never
from uuid import UUID

from conveyor.application.aggregates import AGGREGATE_VERSION, aggregate_version
from conveyor.eventstore.port import RecordedEvent
from conveyor.eventstore.serialization import format_time
from messaging.contracts.inventory import STREAM_PREFIX as INVENTORY_STREAM_PREFIX
from messaging.contracts.orders import ORDER_STREAM_PREFIX as STREAM_PREFIX
from messaging.contracts.orders import (
    ItemAddedEvent,
    ItemRemovedEvent,
    OrderCancelledEvent,
    OrderConfirmedEvent,
    OrderCreatedEvent,
    OrderFulfilledEvent,
)
from messaging.contracts.orders import OrderEvent as IntegrationEvent

Body = dict[str, Any]
Status = Literal["pending", "confirmed", "cancelled", "fulfilled"]

CENTS = Decimal("0.01")
ZERO = Decimal("0.00")


def money(value: Decimal | str) -> str:
    """An amount as stored: a decimal string with exactly two places."""
    return str(Decimal(value).quantize(CENTS))


# -- outcomes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Updated:
    """The document to write (a new object: the body passed in is left untouched)."""

    body: Body


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Already applied: acknowledge and skip."""

    reason: str


@dataclass(frozen=True, slots=True)
class Gap:
    """An earlier event of the same order has not been applied yet: retry later."""

    expected_version: int
    got_version: int
    reason: str


Applied = Updated | Duplicate | Gap


class ContractViolation(ValueError):
    """An event the order's lifecycle cannot produce at this point (e.g. ItemAdded as an
    order's first event, or on a confirmed order). Retrying cannot help: it is a bug
    upstream, and the projection refuses rather than write a document it knows is wrong."""


class Projection(Protocol):
    name: str
    indexes: tuple[tuple[str, ...], ...]

    # Any: each projection reads the integration events of the aggregates that feed it.
    def document_id(self, event: Any) -> str: ...

    def apply(self, body: Body | None, event: Any) -> Applied: ...


# -- the version guard -----------------------------------------------------------------------


def _guard(applied: int, event: IntegrationEvent, subject: str) -> Duplicate | Gap | None:
    """None when `event` is the next one for `subject`, which has applied up to `applied`
    (0: nothing yet)."""
    if event.version <= applied:
        return Duplicate(
            f"{subject} has already applied version {applied}; "
            f"{event.type} v{event.version} (event {event.event_id}) is a duplicate"
        )
    expected = applied + 1
    if event.version > expected:
        state = f"is at version {applied}" if applied else "does not exist yet"
        return Gap(
            expected_version=expected,
            got_version=event.version,
            reason=(
                f"{subject} {state}: {event.type} v{event.version} must wait for version {expected}"
            ),
        )
    return None


# -- the order's lifecycle, shared by all three projections ----------------------------------


@dataclass(frozen=True, slots=True)
class _Line:
    sku: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class _Order:
    """What the projections know about one order, whatever document shape stores it."""

    status: Status
    lines: tuple[_Line, ...]
    total: Decimal
    # Kept apart from `lines`: documents drop their lines once the order is final, but the
    # item count must survive that (and a confirmed order may still be cancelled).
    item_count: int
    cancel_reason: str | None


def _advance(order: _Order | None, event: IntegrationEvent, subject: str) -> _Order:
    """The order after `event` (whose version the guard has already accepted)."""
    if isinstance(event, OrderCreatedEvent):
        if order is not None:
            raise ContractViolation(f"{subject} already exists: OrderCreated v{event.version}")
        return _Order("pending", (), ZERO, 0, None)
    if order is None:
        raise ContractViolation(
            f"{subject} does not exist: an order's first event must be OrderCreated, "
            f"got {event.type} v{event.version}"
        )
    if isinstance(event, ItemAddedEvent | ItemRemovedEvent):
        if order.status != "pending":
            raise ContractViolation(
                f"{subject} is {order.status}: {event.type} v{event.version} cannot follow"
            )
        if isinstance(event, ItemAddedEvent):
            lines = _with_item(order.lines, event)
        else:
            lines = tuple(line for line in order.lines if line.sku != event.data.sku)
        return replace(
            order,
            lines=lines,
            total=sum((line.unit_price * line.quantity for line in lines), ZERO),
            item_count=sum(line.quantity for line in lines),
        )
    if isinstance(event, OrderConfirmedEvent):
        # The domain's total is the authority; the lines only reproduce it while pending.
        return replace(order, status="confirmed", total=Decimal(event.data.total))
    if isinstance(event, OrderCancelledEvent):
        return replace(order, status="cancelled", cancel_reason=event.data.reason)
    if isinstance(event, OrderFulfilledEvent):
        if order.status != "confirmed":
            raise ContractViolation(
                f"{subject} is {order.status}: OrderFulfilled v{event.version} needs a "
                "confirmed order"
            )
        return replace(order, status="fulfilled")
    assert_never(event)


def _with_item(lines: tuple[_Line, ...], event: ItemAddedEvent) -> tuple[_Line, ...]:
    data = event.data
    if any(line.sku == data.sku for line in lines):
        # The domain refuses a second price for a SKU already in the order, so adding to
        # the quantity keeps the line's (identical) price.
        return tuple(
            replace(line, quantity=line.quantity + data.quantity) if line.sku == data.sku else line
            for line in lines
        )
    return (*lines, _Line(data.sku, data.quantity, Decimal(data.unit_price)))


def _lines_from(stored: Iterable[Body]) -> tuple[_Line, ...]:
    return tuple(
        _Line(line["sku"], int(line["quantity"]), Decimal(line["unit_price"])) for line in stored
    )


def _lines_json(lines: Iterable[_Line]) -> list[Body]:
    return [
        {"sku": line.sku, "quantity": line.quantity, "unit_price": money(line.unit_price)}
        for line in lines
    ]


def _advance_order_document(
    body: Body | None, event: IntegrationEvent, *, lines_field: str
) -> _Order | Duplicate | Gap:
    """For the documents keyed by order: guard on the document's version, then the order
    after `event`. `lines_field` names where the document keeps the lines it needs to
    recompute totals."""
    subject = f"order {event.order_id}"
    verdict = _guard(body["version"] if body is not None else 0, event, subject)
    if verdict is not None:
        return verdict
    known = (
        None
        if body is None
        else _Order(
            body["status"],
            _lines_from(body[lines_field]),
            Decimal(body["total"]),
            body["item_count"],
            body.get("cancel_reason"),
        )
    )
    return _advance(known, event, subject)


# -- order_summary ---------------------------------------------------------------------------


class OrderSummaryProjection:
    """One document per order: customer, status, items, total, version, times."""

    name = "order_summary"
    indexes: tuple[tuple[str, ...], ...] = (("customer_id",),)

    def document_id(self, event: IntegrationEvent) -> str:
        return event.order_id

    def apply(self, body: Body | None, event: IntegrationEvent) -> Applied:
        order = _advance_order_document(body, event, lines_field="items")
        if not isinstance(order, _Order):
            return order
        at = format_time(event.occurred_at)
        return Updated(
            {
                "order_id": event.order_id,
                "customer_id": event.customer_id if body is None else body["customer_id"],
                "status": order.status,
                "items": [
                    {**line, "subtotal": money(Decimal(line["unit_price"]) * line["quantity"])}
                    for line in _lines_json(order.lines)
                ],
                "total": money(order.total),
                "item_count": order.item_count,
                "version": event.version,
                "created_at": at if body is None else body["created_at"],
                "updated_at": at,
                "cancel_reason": order.cancel_reason,
                "last_event_id": str(event.event_id),
            }
        )


# -- customer_history ------------------------------------------------------------------------


class CustomerHistoryProjection:
    """A customer's orders: one document per order, with status, total, version and times,
    indexed by customer. No document grows with a customer's history — one document per
    customer, rewritten whole on every event, reached MongoDB's 16 MB limit (issue 15) —
    so the customer's answer (counts, lifetime confirmed total, the orders) is gathered at
    query time (conveyor/queries/service.py)."""

    name = "customer_history"
    indexes: tuple[tuple[str, ...], ...] = (
        ("customer_id", "created_at"),
        ("customer_id", "status"),
        ("customer_id", "updated_at"),
    )

    def document_id(self, event: IntegrationEvent) -> str:
        return event.order_id

    def apply(self, body: Body | None, event: IntegrationEvent) -> Applied:
        subject = f"customer {event.customer_id}'s order {event.order_id}"
        verdict = _guard(body["version"] if body is not None else 0, event, subject)
        if verdict is not None:
            return verdict
        known = (
            None
            if body is None
            else _Order(
                body["status"],
                _lines_from(body["lines"]),
                Decimal(body["total"]),
                0,  # not stored here: nothing reads it
                None,
            )
        )
        order = _advance(known, event, subject)
        at = format_time(event.occurred_at)
        return Updated(
            {
                "customer_id": event.customer_id if body is None else body["customer_id"],
                "order_id": event.order_id,
                "status": order.status,
                "total": money(order.total),
                "version": event.version,
                "created_at": at if body is None else body["created_at"],
                "updated_at": at,
                # Only a pending order's total can still change (ItemRemoved needs the
                # prices); a final order's lines would only take room.
                "lines": _lines_json(order.lines) if order.status == "pending" else [],
            }
        )


# -- active_orders ---------------------------------------------------------------------------


class ActiveOrdersProjection:
    """One document per order, kept after confirm/cancel with its final status (a
    tombstone: deleting it would let a late duplicate of OrderCreated create it again);
    queries ask for status "pending".

    Besides the listed fields it keeps `lines` while the order is pending, because an
    ItemRemoved names only the SKU and the new total needs the remaining lines' prices.
    """

    name = "active_orders"
    # The listing queries (conveyor/queries/service.py): by status, or by status and customer,
    # oldest first, optionally only those created before a time. Each index gives both the
    # filter and the order, so no query sorts its whole match in memory.
    indexes: tuple[tuple[str, ...], ...] = (
        ("status", "customer_id", "created_at"),
        ("status", "created_at"),
    )

    def document_id(self, event: IntegrationEvent) -> str:
        return event.order_id

    def apply(self, body: Body | None, event: IntegrationEvent) -> Applied:
        order = _advance_order_document(body, event, lines_field="lines")
        if not isinstance(order, _Order):
            return order
        at = format_time(event.occurred_at)
        return Updated(
            {
                "order_id": event.order_id,
                "customer_id": event.customer_id if body is None else body["customer_id"],
                "status": order.status,
                "total": money(order.total),
                "item_count": order.item_count,
                "version": event.version,
                "created_at": at if body is None else body["created_at"],
                "updated_at": at,
                "lines": _lines_json(order.lines) if order.status == "pending" else [],
            }
        )


# -- stock_levels ----------------------------------------------------------------------------


def _stock_document(sku: str) -> Body:
    return {
        "sku": sku,
        "on_hand": 0,
        "reserved": 0,
        "available": 0,
        "open_reservations": 0,
        "received_total": 0,
        "committed_total": 0,
        "refused_total": 0,
        "version": 0,
        "updated_at": None,
        "last_event_id": None,
    }


def advance_stock(document: Body, event_type: str, data: Any) -> str | None:
    """`document` (a stock level, updated in place) after one Inventory event's data; the
    reason when the event cannot follow (a count would go negative), else None. Shared by
    the live projection and the rebuild's fold."""
    quantity = data.get("quantity", 0)
    match event_type:
        case "StockReceived":
            document["on_hand"] += quantity
            document["received_total"] += quantity
        case "StockReserved":
            document["reserved"] += quantity
            document["open_reservations"] += 1
        case "ReservationRefused":
            document["refused_total"] += 1
        case "ReservationReleased":
            document["reserved"] -= quantity
            document["open_reservations"] -= 1
        case "ReservationCommitted":
            document["on_hand"] -= quantity
            document["reserved"] -= quantity
            document["committed_total"] += quantity
            document["open_reservations"] -= 1
        case _:
            return f"{event_type} is not an Inventory event"
    document["available"] = document["on_hand"] - document["reserved"]
    if min(document["reserved"], document["available"], document["open_reservations"]) < 0:
        return f"{event_type} would leave sku {document['sku']} with negative stock"
    return None


class StockLevelsProjection:
    """One document per SKU: on hand, reserved, available (and the totals behind them), fed
    by `inventory.*`. Stock never goes negative here either: an event that would make it so
    is refused as a contract violation (the Inventory aggregate cannot produce it)."""

    name = "stock_levels"
    # `GET /stock?below=N`: the SKUs with less than N available, fewest first.
    indexes: tuple[tuple[str, ...], ...] = (("available",),)

    def document_id(self, event: Any) -> str:
        return str(event.aggregate_id)

    def apply(self, body: Body | None, event: Any) -> Applied:
        sku = self.document_id(event)
        verdict = _guard(body["version"] if body is not None else 0, event, f"sku {sku}")
        if verdict is not None:
            return verdict
        document = dict(body) if body is not None else _stock_document(sku)
        problem = advance_stock(document, event.type, event.data.model_dump())
        if problem is not None:
            raise ContractViolation(problem)
        document["version"] = event.version
        document["updated_at"] = format_time(event.occurred_at)
        document["last_event_id"] = str(event.event_id)
        return Updated(document)


ORDER_SUMMARY = OrderSummaryProjection()
CUSTOMER_HISTORY = CustomerHistoryProjection()
ACTIVE_ORDERS = ActiveOrdersProjection()
STOCK_LEVELS = StockLevelsProjection()
ORDER_PROJECTIONS: tuple[Projection, ...] = (ORDER_SUMMARY, CUSTOMER_HISTORY, ACTIVE_ORDERS)
PROJECTIONS: tuple[Projection, ...] = (*ORDER_PROJECTIONS, STOCK_LEVELS)
PROJECTIONS_BY_NAME: dict[str, Projection] = {p.name: p for p in PROJECTIONS}


# -- in-memory folds (rebuilds, verification) ------------------------------------------------


class UnexpectedGap(Exception):
    """A gap while folding the log in order: the log or the projection has a bug."""

    def __init__(self, projection: str, doc_id: str, gap: Gap) -> None:
        super().__init__(f"{projection}/{doc_id}: {gap.reason}")
        self.projection = projection
        self.doc_id = doc_id
        self.gap = gap


def apply_in_memory(
    projection: Projection, documents: dict[str, Body], event: IntegrationEvent
) -> Updated | Duplicate:
    """Apply `event` to `documents` (by id), replacing the document on Updated; a Duplicate
    changes nothing. A Gap raises UnexpectedGap: a rebuild reads the global log in commit
    order, so unlike live delivery there is nothing to wait for."""
    doc_id = projection.document_id(event)
    outcome = projection.apply(documents.get(doc_id), event)
    if isinstance(outcome, Gap):
        raise UnexpectedGap(projection.name, doc_id, outcome)
    if isinstance(outcome, Updated):
        documents[doc_id] = outcome.body
    return outcome


def fold(
    projection: Projection,
    events: Iterable[IntegrationEvent],
    documents: dict[str, Body] | None = None,
) -> dict[str, Body]:
    """The documents after applying `events` in order (to `documents`, updated in place,
    or to an empty set)."""
    result: dict[str, Body] = {} if documents is None else documents
    for event in events:
        apply_in_memory(projection, result, event)
    return result


# -- the rebuild's fast fold -----------------------------------------------------------------
#
# A rebuild reads the global log in commit order, where every order's events arrive once,
# in version order. For such a log all three projections track the same order lifecycle,
# so `LogFold` folds each stored event once into one mutable per-order state and renders
# every final document at the end — no integration events (no pydantic validation), no
# per-event documents, no per-event copies of a customer's order list. It reproduces the
# projections above exactly (tests/unit/test_projections.py compares it with `fold` on
# random logs) but only for what it recognises: `add` returns False, changing nothing, for
# anything else (a duplicate, a gap, an event the contract or the lifecycle refuses, a
# shape the contract might coerce differently), and the caller hands over to the projections
# themselves from that event on.

_DECIMAL_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")  # an ASCII subset of DecimalText


class _OrderState:
    __slots__ = (
        "cancel_reason",
        "created",
        "customer_id",
        "event_id",
        "item_count",
        "lines",
        "occurred_at",
        "order_id",
        "status",
        "times",
        "total",
        "total_text",
        "version",
    )

    def __init__(self, order_id: str, customer_id: str, created: datetime, event_id: UUID):
        self.order_id = order_id
        self.customer_id = customer_id
        self.status = "pending"
        # sku -> (quantity, unit price as stored, its text, subtotal text)
        self.lines: dict[str, tuple[int, Decimal, str, str]] = {}
        self.total = ZERO
        self.total_text = "0.00"
        self.item_count = 0
        self.version = 1
        self.created = created
        self.occurred_at = created
        self.event_id = event_id
        self.cancel_reason: str | None = None
        self.times: tuple[str, str] | None = None


def _fast_time(moment: datetime) -> str:
    """format_time, without strftime for the usual aware-UTC moment."""
    if moment.tzinfo is UTC and moment.year >= 1000:
        return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 (faster than f"")
            moment.year,
            moment.month,
            moment.day,
            moment.hour,
            moment.minute,
            moment.second,
            moment.microsecond,
        )
    return format_time(moment)


def _times(state: _OrderState) -> tuple[str, str]:
    """(created_at, updated_at) as the documents store them, formatted once per order."""
    if state.times is None:
        state.times = (_fast_time(state.created), _fast_time(state.occurred_at))
    return state.times


class LogFold:
    """The three projections' documents folded from stored events of the order streams
    (see above). Memory grows with the number of orders."""

    def __init__(self) -> None:
        self.orders: dict[str, _OrderState] = {}
        self.stock: dict[str, Body] = {}
        """sku -> its stock_levels document."""

    def add_stock(self, event: RecordedEvent) -> bool:
        """Fold one stored Inventory event into its SKU's stock level (as STOCK_LEVELS would);
        False (and nothing changed) when the projection must handle it itself."""
        data = event.data
        metadata = event.metadata
        if (
            type(data) is not dict
            or type(metadata) is not dict
            or type(event.event_id) is not UUID
            or type(event.occurred_at) is not datetime
            or type(metadata.get(AGGREGATE_VERSION, 0)) is not int
        ):
            return False
        for key in ("correlation_id", "causation_id"):
            if metadata.get(key) is not None and type(metadata[key]) is not str:
                return False
        if not _plain_inventory_data(event.type, data):
            return False
        version = aggregate_version(event)
        sku = event.stream_id[len(INVENTORY_STREAM_PREFIX) :]
        known = self.stock.get(sku)
        if version != (known["version"] if known is not None else 0) + 1:
            return False
        document = dict(known) if known is not None else _stock_document(sku)
        if advance_stock(document, event.type, data) is not None:
            return False
        document["version"] = version
        document["updated_at"] = _fast_time(event.occurred_at)
        document["last_event_id"] = str(event.event_id)
        self.stock[sku] = document
        return True

    def add(self, event: RecordedEvent) -> bool:
        """Fold one stored event of an order stream with an integration contract; False
        (and nothing changed) when the projections must handle it themselves."""
        data = event.data
        metadata = event.metadata
        version = event.version
        if AGGREGATE_VERSION in metadata:  # after a rejection marker: the projections map it
            return False
        if (
            type(data) is not dict
            or type(metadata) is not dict
            or type(version) is not int
            or type(event.event_id) is not UUID
            or type(event.occurred_at) is not datetime
        ):
            return False
        correlation, causation = metadata.get("correlation_id"), metadata.get("causation_id")
        if (correlation is not None and type(correlation) is not str) or (
            causation is not None and type(causation) is not str
        ):
            return False
        order_id = event.stream_id[len(STREAM_PREFIX) :]  # the caller checked the prefix
        state = self.orders.get(order_id)
        kind = event.type
        if kind == "OrderCreated":
            customer = data.get("customer_id")
            if state is not None or version != 1 or type(customer) is not str:
                return False
            self.orders[order_id] = _OrderState(
                order_id, customer, event.occurred_at, event.event_id
            )
            return True
        if state is None or version != state.version + 1:
            return False
        try:
            if kind == "ItemAdded" or kind == "ItemRemoved":
                if state.status != "pending":
                    return False
                sku = data.get("sku")
                if type(sku) is not str:
                    return False
                lines = state.lines
                # Everything is computed before anything changes (Decimal may raise). The
                # projections sum the lines as they reload them — stored prices — in order,
                # except a line added by this very event, last, at the event's own price.
                if kind == "ItemAdded":
                    quantity, price_text = data.get("quantity"), data.get("unit_price")
                    if (
                        type(quantity) is not int
                        or type(price_text) is not str
                        or not _DECIMAL_TEXT.fullmatch(price_text)
                    ):
                        return False
                    known = lines.get(sku)
                    if known is None:
                        raw = Decimal(price_text)
                        stored = raw.quantize(CENTS)
                        count = quantity
                        total = (
                            sum((line[1] * line[0] for line in lines.values()), ZERO)
                            + raw * quantity
                        )
                    else:
                        stored = known[1]
                        count = known[0] + quantity
                        total = sum(
                            (
                                stored * count if key == sku else line[1] * line[0]
                                for key, line in lines.items()
                            ),
                            ZERO,
                        )
                    line = (count, stored, str(stored), str((stored * count).quantize(CENTS)))
                    total_text = str(total.quantize(CENTS))
                    lines[sku] = line
                    state.item_count += quantity
                else:
                    total = sum(
                        (line[1] * line[0] for key, line in lines.items() if key != sku), ZERO
                    )
                    total_text = str(total.quantize(CENTS))
                    removed = lines.pop(sku, None)
                    if removed is not None:
                        state.item_count -= removed[0]
                state.total = Decimal(total_text)
                state.total_text = total_text
            elif kind == "OrderConfirmed":
                confirmed = data.get("total")
                if type(confirmed) is not str or not _DECIMAL_TEXT.fullmatch(confirmed):
                    return False
                quantized = Decimal(confirmed).quantize(CENTS)
                state.status = "confirmed"
                state.total = quantized
                state.total_text = str(quantized)
            elif kind == "OrderCancelled":
                reason = data.get("reason")
                if type(reason) is not str:
                    return False
                state.status = "cancelled"
                state.cancel_reason = reason
            elif kind == "OrderFulfilled":
                if state.status != "confirmed":
                    return False
                state.status = "fulfilled"
            else:
                return False
        except ArithmeticError:  # the projections raise it themselves, from this event
            return False
        state.version = version
        state.times = None
        state.occurred_at = event.occurred_at
        state.event_id = event.event_id
        return True

    def customers(self) -> dict[str, str]:
        """order id -> customer id, of every order folded."""
        return {order_id: state.customer_id for order_id, state in self.orders.items()}

    def documents(self, projection_name: str) -> dict[str, Body]:
        """The projection's documents after every event folded so far, by id."""
        if projection_name == ORDER_SUMMARY.name:
            return {s.order_id: _summary_document(s) for s in self.orders.values()}
        if projection_name == ACTIVE_ORDERS.name:
            return {s.order_id: _active_document(s) for s in self.orders.values()}
        if projection_name == CUSTOMER_HISTORY.name:
            return {s.order_id: _history_document(s) for s in self.orders.values()}
        if projection_name == STOCK_LEVELS.name:
            return {sku: dict(document) for sku, document in self.stock.items()}
        raise KeyError(projection_name)


_UNITS = 10**12  # the contract's bound on an Inventory event's quantities


def _count(value: Any, low: int = 0) -> bool:
    return type(value) is int and low <= value <= _UNITS


def _plain_inventory_data(event_type: str, data: dict[str, Any]) -> bool:
    """Data the contract's models take as they are (else the projection decides)."""
    order_id = data.get("order_id")
    if event_type == "StockReceived":
        return _count(data.get("quantity"))
    if type(order_id) is not str or len(order_id) > 255:
        return False
    if event_type == "ReservationRefused":
        sku = data.get("sku")
        return (
            type(sku) is str
            and len(sku) <= 255
            and _count(data.get("requested"))
            and _count(data.get("available"), -_UNITS)
        )
    return _count(data.get("quantity"))


def _fast_lines(state: _OrderState) -> list[Body]:
    return [
        {"sku": sku, "quantity": line[0], "unit_price": line[2]}
        for sku, line in state.lines.items()
    ]


def _summary_document(s: _OrderState) -> Body:
    created_at, updated_at = _times(s)
    return {
        "order_id": s.order_id,
        "customer_id": s.customer_id,
        "status": s.status,
        "items": [
            {"sku": sku, "quantity": line[0], "unit_price": line[2], "subtotal": line[3]}
            for sku, line in s.lines.items()
        ],
        "total": s.total_text,
        "item_count": s.item_count,
        "version": s.version,
        "created_at": created_at,
        "updated_at": updated_at,
        "cancel_reason": s.cancel_reason,
        "last_event_id": str(s.event_id),
    }


def _active_document(s: _OrderState) -> Body:
    created_at, updated_at = _times(s)
    return {
        "order_id": s.order_id,
        "customer_id": s.customer_id,
        "status": s.status,
        "total": s.total_text,
        "item_count": s.item_count,
        "version": s.version,
        "created_at": created_at,
        "updated_at": updated_at,
        "lines": _fast_lines(s) if s.status == "pending" else [],
    }


def _history_document(s: _OrderState) -> Body:
    created_at, updated_at = _times(s)
    return {
        "customer_id": s.customer_id,
        "order_id": s.order_id,
        "status": s.status,
        "total": s.total_text,
        "version": s.version,
        "created_at": created_at,
        "updated_at": updated_at,
        "lines": _fast_lines(s) if s.status == "pending" else [],
    }


# The same documents as JSON text, exactly as the read-model stores encode them
# (json.dumps with separators=(",", ":"), ensure_ascii=False): a rebuild writes thousands,
# and building the text directly costs less than building dicts and encoding them.
# Numbers, times, ids and statuses are plain ASCII by construction; free text is quoted
# by json's own encoder.


def _lines_text(state: _OrderState, subtotals: bool) -> str:
    if subtotals:
        return ",".join(
            f'{{"sku":{_quote(sku)},"quantity":{line[0]!r},"unit_price":"{line[2]}",'
            f'"subtotal":"{line[3]}"}}'
            for sku, line in state.lines.items()
        )
    return ",".join(
        f'{{"sku":{_quote(sku)},"quantity":{line[0]!r},"unit_price":"{line[2]}"}}'
        for sku, line in state.lines.items()
    )


def _summary_text(s: _OrderState) -> str:
    created_at, updated_at = _times(s)
    reason = "null" if s.cancel_reason is None else _quote(s.cancel_reason)
    return (
        f'{{"order_id":{_quote(s.order_id)},"customer_id":{_quote(s.customer_id)},'
        f'"status":"{s.status}","items":[{_lines_text(s, True)}],"total":"{s.total_text}",'
        f'"item_count":{s.item_count!r},"version":{s.version!r},"created_at":"{created_at}",'
        f'"updated_at":"{updated_at}","cancel_reason":{reason},"last_event_id":"{s.event_id}"}}'
    )


def _active_text(s: _OrderState) -> str:
    created_at, updated_at = _times(s)
    lines = _lines_text(s, False) if s.status == "pending" else ""
    return (
        f'{{"order_id":{_quote(s.order_id)},"customer_id":{_quote(s.customer_id)},'
        f'"status":"{s.status}","total":"{s.total_text}","item_count":{s.item_count!r},'
        f'"version":{s.version!r},"created_at":"{created_at}","updated_at":"{updated_at}",'
        f'"lines":[{lines}]}}'
    )


def _history_text(s: _OrderState) -> str:
    created_at, updated_at = _times(s)
    lines = _lines_text(s, False) if s.status == "pending" else ""
    return (
        f'{{"customer_id":{_quote(s.customer_id)},"order_id":{_quote(s.order_id)},'
        f'"status":"{s.status}","total":"{s.total_text}","version":{s.version!r},'
        f'"created_at":"{created_at}","updated_at":"{updated_at}","lines":[{lines}]}}'
    )


def documents_json(fold: LogFold, projection_name: str) -> dict[str, str]:
    """`fold.documents(projection_name)`, each as the JSON text the stores would write."""
    if projection_name == ORDER_SUMMARY.name:
        return {s.order_id: _summary_text(s) for s in fold.orders.values()}
    if projection_name == ACTIVE_ORDERS.name:
        return {s.order_id: _active_text(s) for s in fold.orders.values()}
    if projection_name == CUSTOMER_HISTORY.name:
        return {s.order_id: _history_text(s) for s in fold.orders.values()}
    if projection_name == STOCK_LEVELS.name:
        return {
            sku: json.dumps(document, separators=(",", ":"), ensure_ascii=False)
            for sku, document in fold.stock.items()
        }
    raise KeyError(projection_name)
