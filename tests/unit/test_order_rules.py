"""Given-when-then tests of the Order aggregate's rules (pure domain, no I/O).

given(*events) rebuilds the state from history, .when(command) runs `decide`, and
.then(*events) / .then_rejected(ErrorClass, *message_parts) assert on the outcome.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from domain.codec import MissingUpcaster, UnknownSchemaVersion
from domain.orders import events as events_module
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
    OrderRuleViolation,
    QuantityLimitExceeded,
    UnitPriceMismatch,
)
from domain.orders.events import (
    CURRENT_SCHEMA_VERSION,
    EVENT_TYPES,
    UPCASTERS,
    DomainEvent,
    ItemAdded,
    ItemRemoved,
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderFulfilled,
    UnknownEventType,
    event_from_data,
    event_to_data,
    event_type_name,
    item_added_v1_to_v2,
)
from domain.orders.order import MAX_LINES_PER_ORDER, Order, OrderLine, OrderStatus, decide, rebuild

try:
    from hypothesis import given as hypothesis_given
    from hypothesis import settings
    from hypothesis import strategies as st

    HAS_HYPOTHESIS = True
except ImportError:  # pragma: no cover - property tests are optional
    HAS_HYPOTHESIS = False

# Snapshots of the module-level registries, to prove monkeypatched tests leave no trace.
SCHEMA_VERSIONS_AT_IMPORT = dict(CURRENT_SCHEMA_VERSION)
UPCASTERS_AT_IMPORT = dict(UPCASTERS)

ORDER = "order-1"
CUSTOMER = "customer-7"
REASON = "customer changed their mind"


# --------------------------------------------------------------------------- helpers


def D(value: str) -> Decimal:
    return Decimal(value)


def create(order_id: str = ORDER, customer_id: str = CUSTOMER) -> CreateOrder:
    return CreateOrder(order_id=order_id, customer_id=customer_id)


def add(sku: str = "SKU-A", quantity: Any = 1, unit_price: Any = "9.99") -> AddItem:
    price = Decimal(unit_price) if isinstance(unit_price, str) else unit_price
    return AddItem(order_id=ORDER, sku=sku, quantity=quantity, unit_price=price)


def remove(sku: str = "SKU-A") -> RemoveItem:
    return RemoveItem(order_id=ORDER, sku=sku)


def confirm() -> ConfirmOrder:
    return ConfirmOrder(order_id=ORDER)


def cancel(reason: str = REASON) -> CancelOrder:
    return CancelOrder(order_id=ORDER, reason=reason)


created = OrderCreated(customer_id=CUSTOMER)


def added(
    sku: str = "SKU-A", quantity: int = 1, unit_price: str = "9.99", currency: str = "EUR"
) -> ItemAdded:
    return ItemAdded(sku=sku, quantity=quantity, unit_price=D(unit_price), currency=currency)


def removed(sku: str = "SKU-A") -> ItemRemoved:
    return ItemRemoved(sku=sku)


def confirmed(total: str) -> OrderConfirmed:
    return OrderConfirmed(total=D(total))


def cancelled(reason: str = REASON) -> OrderCancelled:
    return OrderCancelled(reason=reason)


@dataclass(frozen=True)
class Outcome:
    command: Command
    events: list[DomainEvent] | None
    error: OrderRuleViolation | None

    def then(self, *expected: DomainEvent) -> list[DomainEvent]:
        assert self.error is None, (
            f"{self.command!r} was rejected ({type(self.error).__name__}: {self.error}), "
            f"expected events {list(expected)!r}"
        )
        assert self.events == list(expected)
        return self.events

    def then_rejected(self, error_class: type[OrderRuleViolation], *message_parts: str) -> Any:
        assert self.error is not None, (
            f"{self.command!r} was accepted with {self.events!r}, expected {error_class.__name__}"
        )
        assert type(self.error) is error_class, (
            f"expected {error_class.__name__}, got {type(self.error).__name__}: {self.error}"
        )
        message = str(self.error)
        assert message == self.error.message
        for part in message_parts:
            assert part in message, f"{part!r} not in error message {message!r}"
        assert self.error.rule == error_class.rule
        return self.error


@dataclass(frozen=True)
class Scenario:
    history: tuple[DomainEvent, ...]

    @property
    def state(self) -> Order:
        return rebuild(ORDER, self.history)

    def when(self, command: Command) -> Outcome:
        state = self.state
        try:
            produced = decide(state, command)
        except OrderRuleViolation as error:
            return Outcome(command, None, error)
        # deciding never changes the state it was given
        assert state == self.state
        return Outcome(command, produced, None)


def given(*history: DomainEvent) -> Scenario:
    return Scenario(tuple(history))


PENDING = (created,)
PENDING_WITH_ITEM = (created, added("SKU-A", 2, "9.99"))
CONFIRMED = (*PENDING_WITH_ITEM, confirmed("19.98"))
CANCELLED_WHILE_PENDING = (*PENDING_WITH_ITEM, cancelled())
CANCELLED_AFTER_CONFIRM = (*CONFIRMED, cancelled())


# --------------------------------------------------------------------------- creation


def test_create_order_on_a_fresh_order_emits_order_created() -> None:
    given().when(create()).then(OrderCreated(customer_id=CUSTOMER))


@pytest.mark.parametrize(
    ("history", "status"),
    [(PENDING, "pending"), (PENDING_WITH_ITEM, "pending"), (CONFIRMED, "confirmed")],
    ids=["pending", "pending-with-items", "confirmed"],
)
def test_an_order_is_created_only_once(history: tuple[DomainEvent, ...], status: str) -> None:
    error = given(*history).when(create()).then_rejected(OrderAlreadyExists, ORDER, status)
    assert error.rule == "order_already_exists"
    assert error.details == {"order_id": ORDER, "status": status}


@pytest.mark.parametrize(
    "command",
    [add(), remove(), confirm(), cancel()],
    ids=["AddItem", "RemoveItem", "ConfirmOrder", "CancelOrder"],
)
def test_every_other_command_needs_an_existing_order(command: Command) -> None:
    error = given().when(command).then_rejected(OrderNotFound, repr(ORDER), "does not exist")
    assert error.rule == "order_not_found"
    assert error.details == {"order_id": ORDER}


@pytest.mark.parametrize(
    ("history", "command", "field_name"),
    [
        ((), create(order_id=" "), "order_id"),
        ((), create(customer_id=""), "customer_id"),
        (PENDING, add(sku="  "), "sku"),
        (PENDING, cancel(reason=""), "reason"),
    ],
    ids=["blank-order-id", "blank-customer", "blank-sku", "blank-cancel-reason"],
)
def test_required_text_fields_must_be_non_empty(
    history: tuple[DomainEvent, ...], command: Command, field_name: str
) -> None:
    error = given(*history).when(command).then_rejected(InvalidField, field_name, "non-empty")
    assert error.rule == "invalid_field"
    assert error.details == {"field": field_name}


# --------------------------------------------------------------------------- pending only


def test_items_can_be_added_and_removed_while_pending() -> None:
    given(*PENDING).when(add("SKU-B", 3, "0.10")).then(added("SKU-B", 3, "0.10"))
    given(*PENDING_WITH_ITEM).when(remove("SKU-A")).then(removed("SKU-A"))


@pytest.mark.parametrize(
    ("command", "action"),
    [(add("SKU-B"), "add items to"), (remove("SKU-A"), "remove items from")],
    ids=["AddItem", "RemoveItem"],
)
def test_items_cannot_change_once_the_order_is_confirmed(command: Command, action: str) -> None:
    error = (
        given(*CONFIRMED)
        .when(command)
        .then_rejected(OrderNotPending, action, repr(ORDER), "confirmed", "not pending")
    )
    assert error.rule == "order_not_pending"
    assert error.details == {"order_id": ORDER, "status": "confirmed"}


# --------------------------------------------------------------------------- quantity


@pytest.mark.parametrize("quantity", [0, -1, 1001, True, False, 2.0, "2"])
def test_quantity_must_be_an_integer_from_1_to_1000(quantity: Any) -> None:
    error = (
        given(*PENDING)
        .when(add("SKU-Q", quantity))
        .then_rejected(InvalidQuantity, "from 1 to 1000", f"got {quantity!r}", "'SKU-Q'")
    )
    assert error.rule == "invalid_quantity"
    assert error.details == {"sku": "SKU-Q", "quantity": quantity}


@pytest.mark.parametrize("quantity", [1, 1000])
def test_quantity_bounds_are_inclusive(quantity: int) -> None:
    given(*PENDING).when(add("SKU-Q", quantity)).then(added("SKU-Q", quantity))


# --------------------------------------------------------------------------- unit price


@pytest.mark.parametrize(
    "unit_price",
    [
        D("9.999"),
        D("0.001"),
        D("-0.01"),
        D("-5"),
        D("NaN"),
        D("sNaN"),
        D("Infinity"),
        D("-Infinity"),
        9.99,
        "9.99",
    ],
    ids=str,
)
def test_unit_price_must_be_a_non_negative_decimal_with_at_most_2_places(unit_price: Any) -> None:
    error = (
        given(*PENDING)
        .when(AddItem(order_id=ORDER, sku="SKU-P", quantity=1, unit_price=unit_price))
        .then_rejected(
            InvalidUnitPrice, ">= 0", "2 decimal places", f"got {unit_price!r}", "'SKU-P'"
        )
    )
    assert error.rule == "invalid_unit_price"
    assert error.details == {"sku": "SKU-P", "unit_price": str(unit_price)}


@pytest.mark.parametrize(
    ("unit_price", "stored"),
    [("0", "0.00"), ("9.99", "9.99"), ("9.90", "9.90"), ("9.9", "9.90"), ("12", "12.00")],
)
def test_valid_unit_prices_are_accepted_and_quantized_to_2_places(
    unit_price: str, stored: str
) -> None:
    [event] = given(*PENDING).when(add("SKU-P", 1, D(unit_price))).then(added("SKU-P", 1, stored))
    assert isinstance(event, ItemAdded)
    assert str(event.unit_price) == stored
    assert event.unit_price.as_tuple().exponent == -2


# --------------------------------------------------------------------------- same SKU twice


def test_adding_an_existing_sku_adds_to_its_quantity_up_to_1000() -> None:
    history = (created, added("SKU-A", 600, "9.99"))
    [event] = given(*history).when(add("SKU-A", 400, "9.99")).then(added("SKU-A", 400, "9.99"))
    state = rebuild(ORDER, (*history, event))
    assert state.lines == {"SKU-A": OrderLine("SKU-A", 1000, D("9.99"))}


def test_adding_an_existing_sku_beyond_1000_in_total_is_rejected() -> None:
    error = (
        given(created, added("SKU-A", 600, "9.99"))
        .when(add("SKU-A", 401, "9.99"))
        .then_rejected(QuantityLimitExceeded, "'SKU-A'", "1001", "600 + 401", "1000")
    )
    assert error.rule == "quantity_limit_exceeded"
    assert error.details == {"sku": "SKU-A", "quantity": 401, "existing_quantity": 600}


def test_the_quantity_limit_is_per_sku_not_per_order() -> None:
    given(created, added("SKU-A", 1000)).when(add("SKU-B", 1000)).then(added("SKU-B", 1000))


def full_order() -> tuple[DomainEvent, ...]:
    return (created, *(added(f"SKU-{n}") for n in range(MAX_LINES_PER_ORDER)))


def test_an_order_holds_at_most_100_distinct_items() -> None:
    assert MAX_LINES_PER_ORDER == 100
    error = (
        given(*full_order())
        .when(add("SKU-NEW"))
        .then_rejected(LineLimitExceeded, repr(ORDER), "100 distinct items", "'SKU-NEW'")
    )
    assert error.rule == "line_limit_exceeded"
    assert error.details == {"order_id": ORDER, "sku": "SKU-NEW", "lines": 100}


def test_the_last_line_up_to_the_limit_is_accepted() -> None:
    given(*full_order()[:-1]).when(add("SKU-LAST")).then(added("SKU-LAST"))


def test_a_full_order_still_adds_to_an_existing_line() -> None:
    given(*full_order()).when(add("SKU-0", 5)).then(added("SKU-0", 5))


def test_removing_a_line_from_a_full_order_makes_room_for_another() -> None:
    given(*full_order(), removed("SKU-0")).when(add("SKU-NEW")).then(added("SKU-NEW"))


def test_adding_an_existing_sku_at_a_different_unit_price_is_rejected() -> None:
    error = (
        given(created, added("SKU-A", 1, "9.99"))
        .when(add("SKU-A", 1, "9.98"))
        .then_rejected(UnitPriceMismatch, "'SKU-A'", "9.99", "9.98")
    )
    assert error.rule == "unit_price_mismatch"
    assert error.details == {
        "sku": "SKU-A",
        "unit_price": "9.98",
        "existing_unit_price": "9.99",
    }


def test_the_same_unit_price_written_differently_is_not_a_mismatch() -> None:
    given(created, added("SKU-A", 1, "9.90")).when(add("SKU-A", 2, "9.9")).then(
        added("SKU-A", 2, "9.90")
    )


def test_a_removed_sku_can_be_added_again_at_a_new_price() -> None:
    given(created, added("SKU-A", 1, "9.99"), removed("SKU-A")).when(add("SKU-A", 5, "4.50")).then(
        added("SKU-A", 5, "4.50")
    )


# --------------------------------------------------------------------------- removing


@pytest.mark.parametrize(
    "history",
    [PENDING, PENDING_WITH_ITEM, (*PENDING_WITH_ITEM, added("SKU-B"), removed("SKU-B"))],
    ids=["empty-order", "other-sku-only", "already-removed"],
)
def test_removing_a_sku_that_is_not_in_the_order_is_rejected(
    history: tuple[DomainEvent, ...],
) -> None:
    error = (
        given(*history)
        .when(remove("SKU-B"))
        .then_rejected(ItemNotInOrder, "'SKU-B'", repr(ORDER), "not in order")
    )
    assert error.rule == "item_not_in_order"
    assert error.details == {"sku": "SKU-B", "order_id": ORDER}


# --------------------------------------------------------------------------- confirming


@pytest.mark.parametrize(
    "history",
    [PENDING, (*PENDING_WITH_ITEM, removed("SKU-A"))],
    ids=["never-had-items", "only-item-removed"],
)
def test_confirming_needs_at_least_one_item(history: tuple[DomainEvent, ...]) -> None:
    error = (
        given(*history)
        .when(confirm())
        .then_rejected(EmptyOrder, repr(ORDER), "no items", "at least one")
    )
    assert error.rule == "empty_order"
    assert error.details == {"order_id": ORDER}


def test_order_confirmed_carries_the_exact_order_total() -> None:
    [event] = (
        given(created, added("SKU-A", 2, "9.99"), added("SKU-B", 3, "0.10"))
        .when(confirm())
        .then(confirmed("20.28"))
    )
    assert isinstance(event, OrderConfirmed)
    assert str(event.total) == "20.28"


def test_the_total_counts_merged_quantities_and_skips_removed_lines() -> None:
    given(
        created,
        added("SKU-A", 2, "9.99"),
        added("SKU-B", 1, "100.00"),
        added("SKU-A", 1, "9.99"),
        removed("SKU-B"),
        added("SKU-C", 10, "0.01"),
    ).when(confirm()).then(confirmed("30.07"))


def test_a_free_order_confirms_with_a_zero_total() -> None:
    [event] = given(created, added("GIFT", 3, "0.00")).when(confirm()).then(confirmed("0"))
    assert isinstance(event, OrderConfirmed)
    assert str(event.total) == "0.00"


def test_confirming_twice_is_rejected() -> None:
    error = (
        given(*CONFIRMED)
        .when(confirm())
        .then_rejected(OrderAlreadyConfirmed, repr(ORDER), "already confirmed")
    )
    assert error.rule == "order_already_confirmed"
    assert error.details == {"order_id": ORDER}


def test_a_unit_price_above_the_maximum_is_rejected() -> None:
    error = (
        given(*PENDING)
        .when(AddItem(order_id=ORDER, sku="SKU-BIG", quantity=1, unit_price=D("1000000.01")))
        .then_rejected(InvalidUnitPrice, "<= 1000000.00", "got Decimal('1000000.01')")
    )
    assert error.rule == "invalid_unit_price"


def test_the_total_stays_exact_at_the_largest_amounts() -> None:
    given(created, added("SKU-BIG", 999, "999999.99")).when(confirm()).then(
        confirmed("998999990.01")
    )


def test_negative_zero_is_stored_as_zero() -> None:
    given(*PENDING).when(add("SKU-Z", 1, "-0")).then(added("SKU-Z", 1, "0.00"))


# --------------------------------------------------------------------------- cancelling


@pytest.mark.parametrize(
    "history", [PENDING, PENDING_WITH_ITEM, CONFIRMED], ids=["empty", "with-items", "confirmed"]
)
def test_a_pending_or_confirmed_order_can_be_cancelled(history: tuple[DomainEvent, ...]) -> None:
    given(*history).when(cancel("out of stock")).then(cancelled("out of stock"))


CANCELLED_HISTORIES = pytest.mark.parametrize(
    "history",
    [CANCELLED_WHILE_PENDING, CANCELLED_AFTER_CONFIRM],
    ids=["cancelled-while-pending", "cancelled-after-confirm"],
)


@CANCELLED_HISTORIES
@pytest.mark.parametrize(
    "command",
    [add("SKU-B"), add("SKU-A", 1, "9.99"), remove("SKU-A"), confirm(), cancel("again")],
    ids=["AddItem-new", "AddItem-existing", "RemoveItem", "ConfirmOrder", "CancelOrder"],
)
def test_a_cancelled_order_accepts_no_further_commands(
    history: tuple[DomainEvent, ...], command: Command
) -> None:
    error = (
        given(*history)
        .when(command)
        .then_rejected(OrderIsCancelled, repr(ORDER), "cancelled", "no further commands")
    )
    assert error.rule == "order_cancelled"
    assert error.details == {"order_id": ORDER, "reason": REASON}


@CANCELLED_HISTORIES
def test_a_cancelled_order_cannot_be_created_again(history: tuple[DomainEvent, ...]) -> None:
    error = given(*history).when(create()).then_rejected(OrderAlreadyExists, ORDER, "cancelled")
    assert error.details == {"order_id": ORDER, "status": "cancelled"}


# --------------------------------------------------------------------------- fulfilment

FULFILLED = (*CONFIRMED, OrderFulfilled())


def fulfil() -> FulfilOrder:
    return FulfilOrder(order_id=ORDER)


def test_a_confirmed_order_is_fulfilled() -> None:
    given(*CONFIRMED).when(fulfil()).then(OrderFulfilled())
    state = rebuild(ORDER, FULFILLED)
    assert state.status is OrderStatus.FULFILLED
    assert state.status == "fulfilled"
    assert state.version == len(FULFILLED)
    assert state.total == D("19.98")


def test_fulfilling_needs_an_existing_order() -> None:
    given().when(fulfil()).then_rejected(OrderNotFound, repr(ORDER), "does not exist")


@pytest.mark.parametrize("history", [PENDING, PENDING_WITH_ITEM], ids=["empty", "with-items"])
def test_only_a_confirmed_order_can_be_fulfilled(history: tuple[DomainEvent, ...]) -> None:
    error = (
        given(*history)
        .when(fulfil())
        .then_rejected(OrderNotConfirmed, repr(ORDER), "pending, not confirmed")
    )
    assert error.rule == "order_not_confirmed"
    assert error.details == {"order_id": ORDER, "status": "pending"}


@CANCELLED_HISTORIES
def test_a_cancelled_order_cannot_be_fulfilled(history: tuple[DomainEvent, ...]) -> None:
    given(*history).when(fulfil()).then_rejected(OrderIsCancelled, "cancelled")


@pytest.mark.parametrize(
    "command",
    [add("SKU-B"), remove("SKU-A"), confirm(), cancel("too late"), fulfil()],
    ids=["AddItem", "RemoveItem", "ConfirmOrder", "CancelOrder", "FulfilOrder"],
)
def test_a_fulfilled_order_accepts_no_further_commands(command: Command) -> None:
    error = (
        given(*FULFILLED)
        .when(command)
        .then_rejected(OrderIsFulfilled, repr(ORDER), "fulfilled", "no further commands")
    )
    assert error.rule == "order_fulfilled"
    assert error.details == {"order_id": ORDER}


def test_a_fulfilled_order_cannot_be_created_again() -> None:
    given(*FULFILLED).when(create()).then_rejected(OrderAlreadyExists, "fulfilled")


def test_the_workflow_can_still_cancel_a_confirmed_order_with_a_reason() -> None:
    given(*CONFIRMED).when(cancel("stock unavailable: sku SKU-A")).then(
        cancelled("stock unavailable: sku SKU-A")
    )


# --------------------------------------------------------------------------- rebuilding


HISTORY = (
    created,  # v1
    added("SKU-A", 2, "9.99"),  # v2
    added("SKU-B", 3, "0.10"),  # v3
    added("SKU-A", 1, "9.99"),  # v4
    removed("SKU-B"),  # v5
    confirmed("29.97"),  # v6
    cancelled(),  # v7
)


@pytest.mark.parametrize(
    ("k", "status", "lines", "total"),
    [
        (0, None, {}, "0.00"),
        (1, OrderStatus.PENDING, {}, "0.00"),
        (2, OrderStatus.PENDING, {"SKU-A": (2, "9.99")}, "19.98"),
        (3, OrderStatus.PENDING, {"SKU-A": (2, "9.99"), "SKU-B": (3, "0.10")}, "20.28"),
        (4, OrderStatus.PENDING, {"SKU-A": (3, "9.99"), "SKU-B": (3, "0.10")}, "30.27"),
        (5, OrderStatus.PENDING, {"SKU-A": (3, "9.99")}, "29.97"),
        (6, OrderStatus.CONFIRMED, {"SKU-A": (3, "9.99")}, "29.97"),
        (7, OrderStatus.CANCELLED, {"SKU-A": (3, "9.99")}, "29.97"),
    ],
)
def test_rebuilding_a_prefix_of_the_history_gives_the_state_as_of_that_version(
    k: int, status: OrderStatus | None, lines: dict[str, tuple[int, str]], total: str
) -> None:
    state = rebuild(ORDER, HISTORY[:k])
    assert state.order_id == ORDER
    assert state.version == k
    assert state.status == status
    assert state.exists is (status is not None)
    assert state.customer_id == (CUSTOMER if k >= 1 else None)
    assert state.cancel_reason == (REASON if k == 7 else None)
    assert dict(state.lines) == {
        sku: OrderLine(sku, quantity, D(price)) for sku, (quantity, price) in lines.items()
    }
    assert state.total == D(total)
    assert str(state.total) == total


def test_the_state_is_an_immutable_value_changed_only_by_applying_events() -> None:
    before = rebuild(ORDER, HISTORY[:2])
    after = before.apply(HISTORY[2])
    assert before == rebuild(ORDER, HISTORY[:2])  # applying returned a new state
    assert after == rebuild(ORDER, HISTORY[:3])
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.status = OrderStatus.CANCELLED  # type: ignore[misc]
    with pytest.raises(TypeError):
        before.lines["SKU-X"] = OrderLine("SKU-X", 1, D("1.00"))  # type: ignore[index]


def test_events_decided_then_applied_drive_the_whole_lifecycle() -> None:
    state = Order(ORDER)
    history: list[DomainEvent] = []
    commands: list[Command] = [
        create(),
        add("SKU-A", 2, "9.99"),
        add("SKU-B", 3, "0.10"),
        add("SKU-A", 1, "9.99"),
        remove("SKU-B"),
        confirm(),
        cancel(),
    ]
    for command in commands:
        for event in decide(state, command):
            history.append(event)
            state = state.apply(event)
    assert tuple(history) == HISTORY
    assert state == rebuild(ORDER, HISTORY)


# --------------------------------------------------------------------------- stored form


ALL_EVENTS = [
    created,
    added("SKU-A", 2, "9.99"),
    added("SKU-Z", 1000, "0.10"),
    removed("SKU-A"),
    confirmed("20.28"),
    confirmed("0.00"),
    cancelled("out of stock"),
    OrderFulfilled(),
]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=repr)
def test_events_round_trip_through_their_stored_form(event: DomainEvent) -> None:
    name = event_type_name(event)
    stored = json.loads(json.dumps(event_to_data(event)))  # what a store really keeps
    back = event_from_data(name, CURRENT_SCHEMA_VERSION[name], stored)
    assert back == event
    assert type(back) is type(event)
    assert repr(back) == repr(event)  # same Decimal exponent, not only the same value


def test_decimals_are_stored_as_exact_strings() -> None:
    assert event_to_data(added("SKU-A", 2, "0.10")) == {
        "sku": "SKU-A",
        "quantity": 2,
        "unit_price": "0.10",
        "currency": "EUR",
    }
    assert event_to_data(confirmed("20.28")) == {"total": "20.28"}
    back = event_from_data("OrderConfirmed", 1, {"total": "20.28"})
    assert isinstance(back, OrderConfirmed)
    assert back.total == D("20.28")
    assert str(back.total) == "20.28"


def test_every_event_type_has_a_current_schema_version() -> None:
    assert set(EVENT_TYPES) == {
        "OrderCreated",
        "ItemAdded",
        "ItemRemoved",
        "OrderConfirmed",
        "OrderCancelled",
        "OrderFulfilled",
    }
    assert set(CURRENT_SCHEMA_VERSION) == set(EVENT_TYPES)


def test_an_unknown_event_type_is_refused() -> None:
    with pytest.raises(UnknownEventType, match="OrderShipped") as caught:
        event_from_data("OrderShipped", 1, {"carrier": "ups"})
    assert caught.value.event_type == "OrderShipped"
    assert isinstance(caught.value, ValueError)


def test_an_older_schema_version_is_upcast_when_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend a v3 of ItemAdded stores the price in cents: v2 → v3 chains after v1 → v2.
    def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
        data = dict(data)
        data["unit_price"] = str(Decimal(data.pop("unit_price")).scaleb(2).quantize(1))
        return data

    monkeypatch.setitem(events_module.CURRENT_SCHEMA_VERSION, "ItemAdded", 3)
    monkeypatch.setitem(events_module.UPCASTERS, ("ItemAdded", 2), v2_to_v3)
    upcasting = events_module.codec("USD")
    old = upcasting.from_data("ItemAdded", 1, {"sku": "SKU-A", "quantity": 2, "unit_price": "9.99"})
    assert old == ItemAdded(sku="SKU-A", quantity=2, unit_price=D("999"), currency="USD")
    # data already at the current version is read as is
    current = upcasting.from_data(
        "ItemAdded", 3, {"sku": "SKU-A", "quantity": 2, "unit_price": "999", "currency": "JPY"}
    )
    assert current == ItemAdded(sku="SKU-A", quantity=2, unit_price=D("999"), currency="JPY")


def test_upcasters_chain_across_several_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        seen.append("v1->v2")
        return {"reason": data["why"]}

    def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
        seen.append("v2->v3")
        return {"reason": data["reason"].strip()}

    monkeypatch.setitem(events_module.CURRENT_SCHEMA_VERSION, "OrderCancelled", 3)
    monkeypatch.setitem(events_module.UPCASTERS, ("OrderCancelled", 1), v1_to_v2)
    monkeypatch.setitem(events_module.UPCASTERS, ("OrderCancelled", 2), v2_to_v3)

    assert event_from_data("OrderCancelled", 1, {"why": " late "}) == cancelled("late")
    assert seen == ["v1->v2", "v2->v3"]


def test_the_upcaster_tests_leave_no_trace() -> None:
    assert dict(CURRENT_SCHEMA_VERSION) == SCHEMA_VERSIONS_AT_IMPORT
    assert dict(UPCASTERS) == UPCASTERS_AT_IMPORT


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("error_class", "rule"),
    [
        (OrderAlreadyExists, "order_already_exists"),
        (OrderNotFound, "order_not_found"),
        (OrderNotPending, "order_not_pending"),
        (OrderAlreadyConfirmed, "order_already_confirmed"),
        (OrderIsCancelled, "order_cancelled"),
        (OrderIsFulfilled, "order_fulfilled"),
        (OrderNotConfirmed, "order_not_confirmed"),
        (InvalidQuantity, "invalid_quantity"),
        (QuantityLimitExceeded, "quantity_limit_exceeded"),
        (LineLimitExceeded, "line_limit_exceeded"),
        (InvalidUnitPrice, "invalid_unit_price"),
        (UnitPriceMismatch, "unit_price_mismatch"),
        (ItemNotInOrder, "item_not_in_order"),
        (EmptyOrder, "empty_order"),
        (InvalidField, "invalid_field"),
    ],
)
def test_every_rule_violation_has_a_stable_rule_code(
    error_class: type[OrderRuleViolation], rule: str
) -> None:
    assert issubclass(error_class, OrderRuleViolation)
    assert error_class.rule == rule
    error = error_class("some message", order_id=ORDER, extra=1)
    assert error.rule == rule
    assert error.message == str(error) == "some message"
    assert error.details == {"order_id": ORDER, "extra": 1}


def test_rule_codes_are_unique() -> None:
    classes = OrderRuleViolation.__subclasses__()
    assert len(classes) >= 13
    assert OrderRuleViolation.rule not in {cls.rule for cls in classes}
    assert len({cls.rule for cls in classes}) == len(classes)


# --------------------------------------------------------------------------- property

if HAS_HYPOTHESIS:
    SKUS = ["SKU-A", "SKU-B", "SKU-C", "SKU-D"]
    prices = st.decimals(
        min_value=0, max_value=D("99999.99"), places=2, allow_nan=False, allow_infinity=False
    )
    operations = st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.sampled_from(SKUS), st.integers(1, 1000), prices),
            st.tuples(st.just("remove"), st.sampled_from(SKUS)),
        ),
        max_size=40,
    )

    @settings(max_examples=200, deadline=None)
    @hypothesis_given(operations=operations, last_price=prices)
    def test_the_confirmed_total_is_the_sum_of_the_remaining_lines(
        operations: list[tuple[Any, ...]], last_price: Decimal
    ) -> None:
        state = rebuild(ORDER, [created])
        model: dict[str, tuple[int, Decimal]] = {}

        def run(command: Command) -> None:
            nonlocal state
            for event in decide(state, command):  # a valid command is never rejected
                state = state.apply(event)

        for operation in operations:
            if operation[0] == "add":
                _, sku, quantity, price = operation
                held, held_price = model.get(sku, (0, price))
                quantity = min(quantity, 1000 - held)  # keep the command valid
                if quantity == 0:
                    continue
                run(add(sku, quantity, held_price))
                model[sku] = (held + quantity, held_price)
            else:
                _, sku = operation
                if sku in model:
                    run(remove(sku))
                    del model[sku]
        if not model:
            run(add("SKU-LAST", 1, last_price))
            model["SKU-LAST"] = (1, last_price)

        assert {sku: (line.quantity, line.unit_price) for sku, line in state.lines.items()} == (
            model
        )
        [event] = decide(state, confirm())
        expected = sum((quantity * price for quantity, price in model.values()), D("0.00"))
        assert event == OrderConfirmed(total=expected)
        assert isinstance(event, OrderConfirmed)
        assert event.total.as_tuple().exponent == -2


def test_a_huge_price_makes_a_short_reason() -> None:
    """A 200,000-digit price once made a 200 KB reason, stored, logged and published."""
    price = Decimal("9" * 200_000 + ".999")
    error = (
        given(*PENDING)
        .when(AddItem(order_id=ORDER, sku="SKU-P", quantity=1, unit_price=price))
        .then_rejected(InvalidUnitPrice, "got Decimal('9999", "'SKU-P'")
    )
    assert len(error.message) <= 500
    assert all(len(str(value)) <= 100 for value in error.details.values())
    long_id = "o-" + "x" * 5000
    refused = given().when(AddItem(order_id=long_id, sku="S", quantity=1, unit_price=D("1"))).error
    assert refused is not None
    assert len(refused.message) <= 500


# --------------------------------------------------------------------------- currency


def test_an_item_without_a_currency_takes_the_shops_default_then_the_orders() -> None:
    assert decide(rebuild(ORDER, PENDING), add(), default_currency="CHF") == [
        added("SKU-A", 1, "9.99", currency="CHF")
    ]
    state = rebuild(ORDER, (created, added("SKU-A", 1, "9.99", currency="GBP")))
    assert state.currency == "GBP"
    assert decide(state, add("SKU-B"), default_currency="CHF") == [
        added("SKU-B", 1, "9.99", currency="GBP")
    ]


def test_an_order_holds_one_currency_until_its_last_line_is_removed() -> None:
    state = rebuild(ORDER, (created, added("SKU-A", 1, "9.99", currency="GBP")))
    other = dataclasses.replace(add("SKU-B"), currency="USD")
    with pytest.raises(CurrencyMismatch, match="is in GBP") as caught:
        decide(state, other)
    assert caught.value.rule == "currency_mismatch"
    emptied = state.apply(removed("SKU-A"))
    assert emptied.currency is None
    assert decide(emptied, other) == [added("SKU-B", 1, "9.99", currency="USD")]


@pytest.mark.parametrize("currency", ["eur", "EURO", "€", "E1R", "ÉUR"])
def test_a_currency_is_an_iso_4217_code(currency: str) -> None:
    with pytest.raises(InvalidCurrency) as caught:
        decide(rebuild(ORDER, PENDING), dataclasses.replace(add(), currency=currency))
    assert caught.value.rule == "invalid_currency"


def test_item_added_v1_means_the_shops_default_currency_once_upcast() -> None:
    v1 = {"sku": "SKU-A", "quantity": 2, "unit_price": "9.99"}
    assert item_added_v1_to_v2(v1, default_currency="SEK") == {**v1, "currency": "SEK"}
    assert v1 == {"sku": "SKU-A", "quantity": 2, "unit_price": "9.99"}  # input untouched
    upcasting = events_module.codec("SEK")
    assert upcasting.from_data("ItemAdded", 1, v1) == added("SKU-A", 2, "9.99", currency="SEK")
    assert upcasting.upcast("ItemAdded", 1, v1) == {**v1, "currency": "SEK"}
    assert CURRENT_SCHEMA_VERSION["ItemAdded"] == 2


def test_the_bare_codec_refuses_v1_rather_than_guess_a_currency() -> None:
    with pytest.raises(MissingUpcaster, match="ItemAdded"):
        event_from_data("ItemAdded", 1, {"sku": "SKU-A", "quantity": 2, "unit_price": "9.99"})


def test_a_future_schema_version_is_never_read_as_current() -> None:
    data = {"sku": "SKU-A", "quantity": 2, "unit_price": "9.99", "currency": "EUR"}
    with pytest.raises(UnknownSchemaVersion, match="schema version 3"):
        events_module.codec("EUR").from_data("ItemAdded", 3, data)
