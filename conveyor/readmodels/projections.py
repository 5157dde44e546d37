"""The projections, as pure functions of (document, integration event).

Every document is one order's (no document grows with a customer's history) or one SKU's,
and records the aggregate's `version` it has applied, and `apply` decides from that alone,
so the guard and the update travel in the same single-document compare-and-set (GUIDE §2):

    event.version <= applied          → Duplicate (acknowledge, change nothing)
    event.version == applied + 1      → Updated(new document)
    event.version >  applied + 1      → Gap (an earlier event is still on its way: retry)

Nothing applied yet counts as version 0, so only an order's first event (OrderCreated,
version 1) can create a document.

Each document's fields are described once, in conveyor/readmodels/documents.py: the
projections here and the rebuild's fold below render through those descriptions.

Documents are JSON-ready: amounts are decimal strings with two places, always computed with
Decimal; times are the events' `occurred_at` in a fixed-width UTC ISO 8601 form, so they
sort and compare as text. What depends on several orders (a customer's counts and totals)
is gathered at query time, so any delivery order that respects each order's own versions
ends in the same documents as a fold of the log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol, assert_never
from uuid import UUID

from conveyor.application.aggregates import AGGREGATE_VERSION, aggregate_version
from conveyor.eventstore.port import RecordedEvent
from conveyor.eventstore.serialization import format_time
from conveyor.readmodels.documents import (
    ACTIVE_ORDERS_DOCUMENT,
    CUSTOMER_HISTORY_DOCUMENT,
    ORDER_SUMMARY_DOCUMENT,
    STOCK_LEVELS_DOCUMENT,
    Body,
    DocumentShape,
)
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


@dataclass(frozen=True, slots=True)
class _OrderFacts:
    """What an order document shows after one event (conveyor/readmodels/documents.py)."""

    order_id: str
    customer_id: str
    status: str
    total_text: str
    item_count: int
    version: int
    created_at: str
    updated_at: str
    cancel_reason: str | None
    last_event_id: str
    lines: tuple[_Line, ...]

    def line_items(self) -> Iterator[tuple[str, int, str, str]]:
        for line in self.lines:
            price = Decimal(line.unit_price).quantize(CENTS)
            yield line.sku, line.quantity, str(price), str((price * line.quantity).quantize(CENTS))


class OrderDocumentProjection:
    """One document per order, rendered through its description (`shape`): the documents
    differ only in the fields they show and in the indexes their queries need."""

    def __init__(
        self,
        name: str,
        shape: DocumentShape,
        indexes: tuple[tuple[str, ...], ...],
        subject: Callable[[IntegrationEvent], str] = lambda event: f"order {event.order_id}",
    ) -> None:
        self.name = name
        self.shape = shape
        self.indexes = indexes
        self._subject = subject
        lines_field = shape.lines_field
        assert lines_field is not None, f"{name}: an order document keeps its lines"
        self._lines_field = lines_field

    def document_id(self, event: IntegrationEvent) -> str:
        return event.order_id

    def apply(self, body: Body | None, event: IntegrationEvent) -> Applied:
        subject = self._subject(event)
        verdict = _guard(body["version"] if body is not None else 0, event, subject)
        if verdict is not None:
            return verdict
        known = (
            None
            if body is None
            else _Order(
                body["status"],
                # A final order's document may have dropped its lines (pending_only).
                _lines_from(body[self._lines_field]),
                Decimal(body["total"]),
                body.get("item_count", 0),  # documents without it: nothing reads it
                body.get("cancel_reason"),
            )
        )
        order = _advance(known, event, subject)
        at = format_time(event.occurred_at)
        facts = _OrderFacts(
            order_id=event.order_id,
            customer_id=event.customer_id if body is None else body["customer_id"],
            status=order.status,
            total_text=money(order.total),
            item_count=order.item_count,
            version=event.version,
            created_at=at if body is None else body["created_at"],
            updated_at=at,
            cancel_reason=order.cancel_reason,
            last_event_id=str(event.event_id),
            lines=order.lines,
        )
        return Updated(self.shape.render(facts))


# -- stock_levels ----------------------------------------------------------------------------


@dataclass(slots=True)
class _StockLevel:
    """One SKU's stock level: the facts STOCK_LEVELS_DOCUMENT shows, by the same names."""

    sku: str
    on_hand: int = 0
    reserved: int = 0
    available: int = 0
    open_reservations: int = 0
    received_total: int = 0
    committed_total: int = 0
    refused_total: int = 0
    version: int = 0
    updated_at: str | None = None
    last_event_id: str | None = None

    @classmethod
    def of(cls, body: Body) -> _StockLevel:
        return cls(**{field.name: body[field.name] for field in STOCK_LEVELS_DOCUMENT.fields})


def advance_stock(level: _StockLevel, event_type: str, data: Any) -> str | None:
    """`level` (updated in place) after one Inventory event's data; the reason when the
    event cannot follow (a count would go negative), else None. Shared by the live
    projection and the rebuild's fold."""
    quantity = data.get("quantity", 0)
    match event_type:
        case "StockReceived":
            level.on_hand += quantity
            level.received_total += quantity
        case "StockReserved":
            level.reserved += quantity
            level.open_reservations += 1
        case "ReservationRefused":
            level.refused_total += 1
        case "ReservationReleased":
            level.reserved -= quantity
            level.open_reservations -= 1
        case "ReservationCommitted":
            level.on_hand -= quantity
            level.reserved -= quantity
            level.committed_total += quantity
            level.open_reservations -= 1
        case _:
            return f"{event_type} is not an Inventory event"
    level.available = level.on_hand - level.reserved
    if min(level.reserved, level.available, level.open_reservations) < 0:
        return f"{event_type} would leave sku {level.sku} with negative stock"
    return None


class StockLevelsProjection:
    """One document per SKU: on hand, reserved, available (and the totals behind them), fed
    by `inventory.*`. Stock never goes negative here either: an event that would make it so
    is refused as a contract violation (the Inventory aggregate cannot produce it)."""

    name = "stock_levels"
    shape = STOCK_LEVELS_DOCUMENT
    # `GET /stock?below=N`: the SKUs with less than N available, fewest first.
    indexes: tuple[tuple[str, ...], ...] = (("available",),)

    def document_id(self, event: Any) -> str:
        return str(event.aggregate_id)

    def apply(self, body: Body | None, event: Any) -> Applied:
        sku = self.document_id(event)
        verdict = _guard(body["version"] if body is not None else 0, event, f"sku {sku}")
        if verdict is not None:
            return verdict
        level = _StockLevel.of(body) if body is not None else _StockLevel(sku)
        problem = advance_stock(level, event.type, event.data.model_dump())
        if problem is not None:
            raise ContractViolation(problem)
        level.version = event.version
        level.updated_at = format_time(event.occurred_at)
        level.last_event_id = str(event.event_id)
        return Updated(self.shape.render(level))


def _customer_and_order(event: IntegrationEvent) -> str:
    return f"customer {event.customer_id}'s order {event.order_id}"


ORDER_SUMMARY = OrderDocumentProjection(
    "order_summary", ORDER_SUMMARY_DOCUMENT, indexes=(("customer_id",),)
)
CUSTOMER_HISTORY = OrderDocumentProjection(
    "customer_history",
    CUSTOMER_HISTORY_DOCUMENT,
    # No document grows with a customer's history — one document per customer, rewritten
    # whole on every event, reached MongoDB's 16 MB limit (issue 15) — so the customer's
    # answer (counts, lifetime confirmed total, the orders) is gathered at query time
    # (conveyor/queries/service.py).
    indexes=(
        ("customer_id", "created_at"),
        ("customer_id", "status"),
        ("customer_id", "updated_at"),
    ),
    subject=_customer_and_order,
)
ACTIVE_ORDERS = OrderDocumentProjection(
    "active_orders",
    ACTIVE_ORDERS_DOCUMENT,
    # The listing queries (conveyor/queries/service.py): by status, or by status and
    # customer, oldest first, optionally only those created before a time. Each index gives
    # both the filter and the order, so no query sorts its whole match in memory. Kept
    # after confirm/cancel with the final status: deleting it would let a late duplicate of
    # OrderCreated create it again; queries ask for status "pending".
    indexes=(
        ("status", "customer_id", "created_at"),
        ("status", "created_at"),
    ),
)
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
# in version order. For such a log the order projections track the same order lifecycle,
# so `LogFold` folds each stored event once into one mutable per-order state (and one per
# SKU for stock levels) and renders every final document at the end, through the same
# descriptions as the projections — no integration events (no pydantic validation), no
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

    # The facts the order documents show (conveyor/readmodels/documents.py).
    @property
    def created_at(self) -> str:
        return _times(self)[0]

    @property
    def updated_at(self) -> str:
        return _times(self)[1]

    @property
    def last_event_id(self) -> str:
        return str(self.event_id)

    def line_items(self) -> Iterator[tuple[str, int, str, str]]:
        for sku, (quantity, _, price, subtotal) in self.lines.items():
            yield sku, quantity, price, subtotal


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
        self.stock: dict[str, _StockLevel] = {}
        """sku -> its stock level."""

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
        if version != (known.version if known is not None else 0) + 1:
            return False
        level = replace(known) if known is not None else _StockLevel(sku)
        if advance_stock(level, event.type, data) is not None:
            return False
        level.version = version
        level.updated_at = _fast_time(event.occurred_at)
        level.last_event_id = str(event.event_id)
        self.stock[sku] = level
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
        shape, facts = self._described(projection_name)
        return {doc_id: shape.render(state) for doc_id, state in facts.items()}

    def documents_json(self, projection_name: str) -> dict[str, str]:
        """`documents(projection_name)`, each as the JSON text the stores would write."""
        shape, facts = self._described(projection_name)
        return {doc_id: shape.render_json(state) for doc_id, state in facts.items()}

    @staticmethod
    def renders(projection_name: str) -> bool:
        """Does the fold keep the facts of this projection's documents?"""
        projection = PROJECTIONS_BY_NAME.get(projection_name)
        return projection is STOCK_LEVELS or isinstance(projection, OrderDocumentProjection)

    def _described(self, projection_name: str) -> tuple[DocumentShape, Mapping[str, Any]]:
        if not self.renders(projection_name):
            raise KeyError(projection_name)
        projection = PROJECTIONS_BY_NAME[projection_name]
        if projection is STOCK_LEVELS:
            return STOCK_LEVELS.shape, self.stock
        assert isinstance(projection, OrderDocumentProjection)
        return projection.shape, self.orders


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


def documents_json(fold: LogFold, projection_name: str) -> dict[str, str]:
    """`fold.documents(projection_name)`, each as the JSON text the stores would write."""
    return fold.documents_json(projection_name)
