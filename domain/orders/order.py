"""The Order aggregate: state rebuilt only from events, and `decide` for the rules.

`Order` is an immutable value. `Order.apply(event)` returns the next state and never fails
(history is fact); `decide(state, command)` returns the new events or raises an
`OrderRuleViolation` that names the broken rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from types import MappingProxyType

from domain.orders.commands import (
    AddItem,
    CancelOrder,
    Command,
    ConfirmOrder,
    CreateOrder,
    FulfilOrder,
    RemoveItem,
)
from domain.orders.errors import (
    CurrencyMismatch,
    EmptyOrder,
    InvalidCurrency,
    InvalidField,
    InvalidQuantity,
    InvalidUnitPrice,
    ItemNotInOrder,
    LineLimitExceeded,
    OrderAlreadyConfirmed,
    OrderAlreadyExists,
    OrderIsCancelled,
    OrderIsFulfilled,
    OrderNotConfirmed,
    OrderNotFound,
    OrderNotPending,
    QuantityLimitExceeded,
    UnitPriceMismatch,
    clipped,
)
from domain.orders.events import (
    DomainEvent,
    ItemAdded,
    ItemRemoved,
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderFulfilled,
)

MIN_QUANTITY = 1
MAX_QUANTITY_PER_SKU = 1000
# Distinct SKUs (lines) per order: keeps an order's stream, its read-model documents and
# every message about it bounded, whatever a producer sends.
MAX_LINES_PER_ORDER = 100
PRICE_DECIMAL_PLACES = 2
# Bounds every total far inside Decimal's 28 significant digits, so sums stay exact.
MAX_UNIT_PRICE = Decimal("1000000.00")
# The shop's default currency unless CONVEYOR_DEFAULT_CURRENCY says otherwise (the
# composition root binds the setting into `decide` and into ItemAdded's v1 upcaster).
DEFAULT_CURRENCY = "EUR"


class OrderStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    FULFILLED = "fulfilled"


@dataclass(frozen=True, slots=True)
class OrderLine:
    sku: str
    quantity: int
    unit_price: Decimal

    @property
    def subtotal(self) -> Decimal:
        return self.unit_price * self.quantity


_NO_LINES: Mapping[str, OrderLine] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    version: int = 0
    customer_id: str | None = None
    status: OrderStatus | None = None
    lines: Mapping[str, OrderLine] = field(default_factory=lambda: _NO_LINES)
    cancel_reason: str | None = None
    currency: str | None = None
    """The currency of every line (one per order); None while the order has none."""

    @property
    def exists(self) -> bool:
        return self.status is not None

    @property
    def total(self) -> Decimal:
        return sum((line.subtotal for line in self.lines.values()), Decimal("0.00"))

    def apply(self, event: DomainEvent) -> Order:
        """The state after `event`. Each applied event is one version."""
        version = self.version + 1
        match event:
            case OrderCreated(customer_id=customer_id):
                return replace(
                    self, version=version, customer_id=customer_id, status=OrderStatus.PENDING
                )
            case ItemAdded(sku=sku, quantity=quantity, unit_price=unit_price, currency=currency):
                lines = dict(self.lines)
                existing = lines.get(sku)
                lines[sku] = OrderLine(
                    sku, quantity + (existing.quantity if existing else 0), unit_price
                )
                return replace(
                    self, version=version, lines=MappingProxyType(lines), currency=currency
                )
            case ItemRemoved(sku=sku):
                lines = dict(self.lines)
                lines.pop(sku, None)
                return replace(
                    self,
                    version=version,
                    lines=MappingProxyType(lines),
                    currency=self.currency if lines else None,
                )
            case OrderConfirmed():
                return replace(self, version=version, status=OrderStatus.CONFIRMED)
            case OrderCancelled(reason=reason):
                return replace(
                    self, version=version, status=OrderStatus.CANCELLED, cancel_reason=reason
                )
            case OrderFulfilled():
                return replace(self, version=version, status=OrderStatus.FULFILLED)


def rebuild(order_id: str, events: Iterable[DomainEvent]) -> Order:
    state = Order(order_id)
    for event in events:
        state = state.apply(event)
    return state


def decide(
    state: Order, command: Command, *, default_currency: str = DEFAULT_CURRENCY
) -> list[DomainEvent]:
    """The events that `command` produces on `state`, or an OrderRuleViolation.
    `default_currency`: the shop's, for an AddItem that names none on an order with none."""
    if isinstance(command, CreateOrder):
        return _create(state, command)
    if not state.exists:
        raise OrderNotFound(f"order {command.order_id!r} does not exist", order_id=command.order_id)
    _refuse_if_cancelled(state)
    _refuse_if_fulfilled(state)
    match command:
        case AddItem():
            return _add_item(state, command, default_currency)
        case RemoveItem():
            return _remove_item(state, command)
        case ConfirmOrder():
            return _confirm(state)
        case CancelOrder():
            return [OrderCancelled(reason=_required_text("reason", command.reason))]
        case FulfilOrder():
            return _fulfil(state)
    raise TypeError(f"not an order command: {command!r}")  # pragma: no cover


def _create(state: Order, command: CreateOrder) -> list[DomainEvent]:
    if state.exists:
        raise OrderAlreadyExists(
            f"order {state.order_id!r} already exists (status {state.status})",
            order_id=state.order_id,
            status=str(state.status),
        )
    _required_text("order_id", command.order_id)
    return [OrderCreated(customer_id=_required_text("customer_id", command.customer_id))]


def _add_item(state: Order, command: AddItem, default_currency: str) -> list[DomainEvent]:
    _require_pending(state, "add items to")
    sku = _required_text("sku", command.sku)
    currency = command.currency or state.currency or default_currency
    if not (
        isinstance(currency, str)
        and len(currency) == 3
        and currency.isascii()
        and currency.isalpha()
        and currency.isupper()
    ):
        raise InvalidCurrency(
            f"currency must be an ISO 4217 code (three capital letters), got "
            f"{clipped(repr(currency), 20)} for sku {sku!r}",
            sku=sku,
            currency=str(currency)[:20],
        )
    if state.currency is not None and currency != state.currency:
        raise CurrencyMismatch(
            f"order {state.order_id!r} is in {state.currency}: sku {sku!r} cannot be added "
            f"in {currency}",
            order_id=state.order_id,
            currency=currency,
            order_currency=state.currency,
        )
    quantity = command.quantity
    if (
        isinstance(quantity, bool)
        or not isinstance(quantity, int)
        or not MIN_QUANTITY <= quantity <= MAX_QUANTITY_PER_SKU
    ):
        raise InvalidQuantity(
            f"quantity must be an integer from {MIN_QUANTITY} to {MAX_QUANTITY_PER_SKU}, "
            f"got {quantity!r} for sku {sku!r}",
            sku=sku,
            quantity=quantity,
        )
    price = _valid_unit_price(sku, command.unit_price)
    existing = state.lines.get(sku)
    if existing is None and len(state.lines) >= MAX_LINES_PER_ORDER:
        raise LineLimitExceeded(
            f"order {state.order_id!r} already has {len(state.lines)} distinct items; the "
            f"limit is {MAX_LINES_PER_ORDER}: sku {sku!r} cannot be added as a new line",
            order_id=state.order_id,
            sku=sku,
            lines=len(state.lines),
        )
    if existing is not None:
        if existing.unit_price != price:
            raise UnitPriceMismatch(
                f"sku {sku!r} is already in the order at unit price {existing.unit_price}, "
                f"not {price}: remove it first to change its price",
                sku=sku,
                unit_price=str(price),
                existing_unit_price=str(existing.unit_price),
            )
        if existing.quantity + quantity > MAX_QUANTITY_PER_SKU:
            raise QuantityLimitExceeded(
                f"sku {sku!r} would reach quantity {existing.quantity + quantity} "
                f"({existing.quantity} + {quantity}); the limit per sku is "
                f"{MAX_QUANTITY_PER_SKU}",
                sku=sku,
                quantity=quantity,
                existing_quantity=existing.quantity,
            )
    return [ItemAdded(sku=sku, quantity=quantity, unit_price=price, currency=currency)]


def _remove_item(state: Order, command: RemoveItem) -> list[DomainEvent]:
    _require_pending(state, "remove items from")
    if command.sku not in state.lines:
        raise ItemNotInOrder(
            f"sku {command.sku!r} is not in order {state.order_id!r}",
            sku=command.sku,
            order_id=state.order_id,
        )
    return [ItemRemoved(sku=command.sku)]


def _confirm(state: Order) -> list[DomainEvent]:
    if state.status is OrderStatus.CONFIRMED:
        raise OrderAlreadyConfirmed(
            f"order {state.order_id!r} is already confirmed", order_id=state.order_id
        )
    if not state.lines:
        raise EmptyOrder(
            f"order {state.order_id!r} has no items: confirming needs at least one",
            order_id=state.order_id,
        )
    return [OrderConfirmed(total=state.total)]


def _fulfil(state: Order) -> list[DomainEvent]:
    if state.status is not OrderStatus.CONFIRMED:
        raise OrderNotConfirmed(
            f"cannot fulfil order {state.order_id!r}: it is {state.status}, not confirmed",
            order_id=state.order_id,
            status=str(state.status),
        )
    return [OrderFulfilled()]


def _refuse_if_fulfilled(state: Order) -> None:
    if state.status is OrderStatus.FULFILLED:
        raise OrderIsFulfilled(
            f"order {state.order_id!r} is fulfilled and accepts no further commands "
            "(its stock is committed and its payment taken)",
            order_id=state.order_id,
        )


def _refuse_if_cancelled(state: Order) -> None:
    if state.status is OrderStatus.CANCELLED:
        raise OrderIsCancelled(
            f"order {state.order_id!r} is cancelled and accepts no further commands",
            order_id=state.order_id,
            reason=state.cancel_reason,
        )


def _require_pending(state: Order, action: str) -> None:
    if state.status is not OrderStatus.PENDING:
        raise OrderNotPending(
            f"cannot {action} order {state.order_id!r}: it is {state.status}, not pending",
            order_id=state.order_id,
            status=str(state.status),
        )


def _valid_unit_price(sku: str, price: Decimal) -> Decimal:
    cents = Decimal(1).scaleb(-PRICE_DECIMAL_PLACES)
    try:
        exact = isinstance(price, Decimal) and price.is_finite() and price == price.quantize(cents)
    except InvalidOperation:  # too many digits to quantize: certainly not a valid price
        exact = False
    if not exact or not 0 <= price <= MAX_UNIT_PRICE:
        raise InvalidUnitPrice(
            f"unit_price must be a decimal >= 0 and <= {MAX_UNIT_PRICE} with at most "
            f"{PRICE_DECIMAL_PLACES} decimal places, got {clipped(repr(price), 60)} "
            f"for sku {sku!r}",
            sku=sku,
            unit_price=str(price),
        )
    return price.quantize(cents) + 0  # + 0 turns -0.00 into 0.00


def _required_text(name: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidField(f"{name} must be a non-empty string, got {value!r}", field=name)
    return value
