"""Given-when-then tests of the Inventory aggregate's rules (pure domain, no I/O)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given as hypothesis_given
from hypothesis import settings
from hypothesis import strategies as st

from domain.inventory.commands import (
    Command,
    CommitReservation,
    ReceiveStock,
    ReleaseReservation,
    ReserveStock,
)
from domain.inventory.errors import (
    InvalidInventoryField,
    InvalidStockQuantity,
    InventoryRuleViolation,
    ReservationAlreadyExists,
    ReservationNotFound,
    StockLimitExceeded,
)
from domain.inventory.events import (
    CODEC,
    DomainEvent,
    ReservationCommitted,
    ReservationRefused,
    ReservationReleased,
    StockReceived,
    StockReserved,
)
from domain.inventory.inventory import (
    MAX_ON_HAND,
    MAX_QUANTITY_PER_COMMAND,
    Inventory,
    decide,
    rebuild,
)

SKU = "SKU-A"
ORDER = "order-1"


@dataclass(frozen=True)
class Outcome:
    command: Command
    events: list[DomainEvent] | None
    error: InventoryRuleViolation | None

    def then(self, *expected: DomainEvent) -> None:
        assert self.error is None, f"{self.command!r} was rejected: {self.error}"
        assert self.events == list(expected)

    def then_rejected(self, error_class: type[InventoryRuleViolation], *parts: str) -> Any:
        assert self.error is not None, f"{self.command!r} was accepted with {self.events!r}"
        assert type(self.error) is error_class, f"got {type(self.error).__name__}: {self.error}"
        for part in parts:
            assert part in self.error.message, f"{part!r} not in {self.error.message!r}"
        assert self.error.rule == error_class.rule
        return self.error


@dataclass(frozen=True)
class Scenario:
    history: tuple[DomainEvent, ...]

    def when(self, command: Command) -> Outcome:
        state = rebuild(SKU, self.history)
        try:
            produced = decide(state, command)
        except InventoryRuleViolation as error:
            return Outcome(command, None, error)
        assert state == rebuild(SKU, self.history)  # deciding never changes the state
        return Outcome(command, produced, None)


def given(*history: DomainEvent) -> Scenario:
    return Scenario(tuple(history))


def reserve(order_id: str = ORDER, quantity: Any = 3) -> ReserveStock:
    return ReserveStock(sku=SKU, order_id=order_id, quantity=quantity)


STOCKED = (StockReceived(10),)
RESERVED = (*STOCKED, StockReserved(ORDER, 3))


# --------------------------------------------------------------------------- receiving


def test_receiving_stock_raises_on_hand() -> None:
    given().when(ReceiveStock(SKU, 5)).then(StockReceived(5))
    state = rebuild(SKU, [StockReceived(5), StockReceived(7)])
    assert (state.on_hand, state.reserved, state.available, state.version) == (12, 0, 12, 2)


@pytest.mark.parametrize(
    "quantity", [0, -1, True, 2.5, "3", MAX_QUANTITY_PER_COMMAND + 1], ids=repr
)
def test_quantities_are_positive_bounded_integers(quantity: Any) -> None:
    for command in (ReceiveStock(SKU, quantity), reserve(quantity=quantity)):
        error = given(*STOCKED).when(command).then_rejected(InvalidStockQuantity, repr(quantity))
        assert error.rule == "invalid_stock_quantity"
        assert error.details == {"sku": SKU, "quantity": quantity}


def test_on_hand_is_bounded() -> None:
    history = [StockReceived(MAX_QUANTITY_PER_COMMAND)] * (MAX_ON_HAND // MAX_QUANTITY_PER_COMMAND)
    error = given(*history).when(ReceiveStock(SKU, 1)).then_rejected(StockLimitExceeded, SKU)
    assert error.details == {"sku": SKU, "quantity": 1, "on_hand": MAX_ON_HAND}


@pytest.mark.parametrize(
    ("command", "field_name"),
    [
        (ReceiveStock(" ", 1), "sku"),
        (ReserveStock(SKU, "", 1), "order_id"),
        (ReleaseReservation(SKU, " "), "order_id"),
        (CommitReservation(SKU, ""), "order_id"),
    ],
)
def test_identifiers_must_not_be_blank(command: Command, field_name: str) -> None:
    error = given(*STOCKED).when(command).then_rejected(InvalidInventoryField, field_name)
    assert error.details == {"field": field_name}


# --------------------------------------------------------------------------- reserving


def test_a_reservation_within_available_stock_is_accepted() -> None:
    given(*STOCKED).when(reserve(quantity=10)).then(StockReserved(ORDER, 10))
    state = rebuild(SKU, RESERVED)
    assert (state.on_hand, state.reserved, state.available) == (10, 3, 7)
    assert dict(state.reservations) == {ORDER: 3}


def test_a_reservation_larger_than_available_is_a_refusal_recorded_as_a_fact() -> None:
    """Not a rule violation: the workflow learns it from the published event."""
    given(*RESERVED).when(reserve("order-2", 8)).then(
        ReservationRefused(order_id="order-2", sku=SKU, requested=8, available=7)
    )
    state = rebuild(SKU, (*RESERVED, ReservationRefused("order-2", SKU, 8, 7)))
    assert (state.on_hand, state.reserved, state.available, state.version) == (10, 3, 7, 3)
    assert dict(state.reservations) == {ORDER: 3}


def test_nothing_can_be_reserved_before_stock_arrives() -> None:
    given().when(reserve(quantity=1)).then(ReservationRefused(ORDER, SKU, 1, 0))


def test_a_refused_order_may_reserve_once_stock_arrives() -> None:
    given(ReservationRefused(ORDER, SKU, 3, 0), *STOCKED).when(reserve(ORDER, 3)).then(
        StockReserved(ORDER, 3)
    )


def test_one_reservation_per_order_and_sku() -> None:
    error = (
        given(*RESERVED)
        .when(reserve(ORDER, 1))
        .then_rejected(ReservationAlreadyExists, repr(ORDER), "one reservation per order")
    )
    assert error.rule == "reservation_already_exists"
    assert error.details == {"sku": SKU, "order_id": ORDER, "reserved": 3}


def test_an_order_may_reserve_again_after_its_reservation_was_released() -> None:
    given(*RESERVED, ReservationReleased(ORDER, 3)).when(reserve(ORDER, 4)).then(
        StockReserved(ORDER, 4)
    )


# --------------------------------------------------------------------------- release / commit


def test_releasing_returns_the_reserved_units_to_available() -> None:
    given(*RESERVED).when(ReleaseReservation(SKU, ORDER)).then(ReservationReleased(ORDER, 3))
    state = rebuild(SKU, (*RESERVED, ReservationReleased(ORDER, 3)))
    assert (state.on_hand, state.reserved, state.available) == (10, 0, 10)
    assert dict(state.reservations) == {}


def test_committing_lowers_on_hand_and_reserved() -> None:
    given(*RESERVED).when(CommitReservation(SKU, ORDER)).then(ReservationCommitted(ORDER, 3))
    state = rebuild(SKU, (*RESERVED, ReservationCommitted(ORDER, 3)))
    assert (state.on_hand, state.reserved, state.available) == (7, 0, 7)
    assert (state.received_total, state.committed_total) == (10, 3)


@pytest.mark.parametrize(
    "history",
    [
        STOCKED,
        (*RESERVED, ReservationReleased(ORDER, 3)),
        (*RESERVED, ReservationCommitted(ORDER, 3)),
    ],
    ids=["never-reserved", "released", "committed"],
)
@pytest.mark.parametrize("make", [ReleaseReservation, CommitReservation])
def test_only_an_existing_reservation_can_be_released_or_committed(
    history: tuple[DomainEvent, ...], make: type[ReleaseReservation | CommitReservation]
) -> None:
    error = (
        given(*history)
        .when(make(SKU, ORDER))
        .then_rejected(ReservationNotFound, repr(ORDER), repr(SKU), "there is none")
    )
    assert error.rule == "reservation_not_found"
    assert error.details == {"sku": SKU, "order_id": ORDER}


def test_another_orders_reservation_is_not_touched() -> None:
    given(*RESERVED).when(ReleaseReservation(SKU, "order-2")).then_rejected(ReservationNotFound)


# --------------------------------------------------------------------------- folding, codec


def test_apply_and_rebuild_agree_and_apply_leaves_the_old_state_alone() -> None:
    history = [*RESERVED, StockReserved("order-2", 2), ReservationCommitted(ORDER, 3)]
    state = Inventory(SKU)
    states = []
    for event in history:
        state = state.apply(event)
        states.append(state)
    assert state == rebuild(SKU, history)
    assert dict(states[1].reservations) == {ORDER: 3}  # not changed by later events
    assert dict(states[2].reservations) == {ORDER: 3, "order-2": 2}
    assert dict(state.reservations) == {"order-2": 2}


def test_a_busy_skus_history_folds_in_linear_time() -> None:
    """10,000 open reservations: copying them per event would be 10^8 operations."""
    history: list[DomainEvent] = [StockReceived(MAX_QUANTITY_PER_COMMAND)]
    history += [StockReserved(f"order-{n}", 1) for n in range(20_000)]
    history += [ReservationCommitted(f"order-{n}", 1) for n in range(0, 20_000, 2)]
    started = time.perf_counter()
    state = rebuild(SKU, history)
    assert time.perf_counter() - started < 2.0
    assert (state.reserved, len(state.reservations), state.version) == (10_000, 10_000, 30_001)
    assert state.on_hand == MAX_QUANTITY_PER_COMMAND - 10_000


@pytest.mark.parametrize(
    "event",
    [
        StockReceived(5),
        StockReserved(ORDER, 3),
        ReservationRefused(ORDER, SKU, 4, 2),
        ReservationReleased(ORDER, 3),
        ReservationCommitted(ORDER, 3),
    ],
    ids=repr,
)
def test_events_round_trip_through_their_stored_form(event: DomainEvent) -> None:
    name = type(event).__name__
    stored = json.loads(json.dumps(CODEC.to_data(event)))
    assert CODEC.from_data(name, CODEC.schema_version_of(event), stored) == event


def test_rule_codes_are_unique() -> None:
    classes = InventoryRuleViolation.__subclasses__()
    assert len(classes) == 5
    assert len({cls.rule for cls in classes} | {InventoryRuleViolation.rule}) == 6


# --------------------------------------------------------------------------- property

ORDERS = [f"order-{n}" for n in range(5)]
operations = st.lists(
    st.one_of(
        st.tuples(st.just("receive"), st.integers(1, 20)),
        st.tuples(st.just("reserve"), st.sampled_from(ORDERS), st.integers(1, 15)),
        st.tuples(st.just("release"), st.sampled_from(ORDERS)),
        st.tuples(st.just("commit"), st.sampled_from(ORDERS)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@hypothesis_given(operations=operations)
def test_available_never_goes_negative_and_on_hand_is_received_minus_committed(
    operations: list[tuple[Any, ...]],
) -> None:
    """Any interleaving, valid or not: refusals change nothing, acceptances keep the books."""
    state = Inventory(SKU)
    history: list[DomainEvent] = []
    received = committed = 0
    for operation in operations:
        command: Command
        match operation:
            case ("receive", quantity):
                command = ReceiveStock(SKU, quantity)
            case ("reserve", order_id, quantity):
                command = ReserveStock(SKU, order_id, quantity)
            case ("release", order_id):
                command = ReleaseReservation(SKU, order_id)
            case ("commit", order_id):
                command = CommitReservation(SKU, order_id)
        try:
            produced = decide(state, command)
        except InventoryRuleViolation:
            continue
        for event in produced:
            state = state.apply(event)
            history.append(event)
            if isinstance(event, StockReceived):
                received += event.quantity
            if isinstance(event, ReservationCommitted):
                committed += event.quantity
        assert state.available >= 0
        assert state.reserved == sum(state.reservations.values()) >= 0
        assert state.on_hand == received - committed
    assert rebuild(SKU, history) == state
