"""Given-when-then tests of the order-fulfilment process manager (pure domain, no I/O).

given(*inputs) runs each input through `decide` and applies the events, as the worker does;
.when(input) decides once more; the outcome is checked as events, commands and timeouts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given as hypothesis_given
from hypothesis import settings
from hypothesis import strategies as st

from domain.fulfilment.events import (
    FulfilmentCancelled,
    FulfilmentCompleted,
    FulfilmentRequested,
    FulfilmentStarted,
    FulfilmentWithdrawn,
    LatePaymentRefunded,
    LateReservationReleased,
    PaymentAuthorizationNoted,
    PaymentRequestIssued,
    StockReservationNoted,
    WorkflowEvent,
)
from domain.fulfilment.inputs import (
    FulfilmentLine,
    FulfilmentTimedOut,
    Input,
    OrderCancelled,
    OrderConfirmed,
    OrderFulfilled,
    PaymentAuthorized,
    PaymentDeclined,
    ReservationRefused,
    StockReserved,
)
from domain.fulfilment.outgoing import OutgoingCommand, ScheduleTimeout, command_id
from domain.fulfilment.workflow import (
    DEFAULT_TIMEOUT,
    Decision,
    FulfilmentState,
    WorkflowStatus,
    commands_recorded_for,
    decide,
    rebuild,
    stream_name,
)
from domain.inventory.commands import CommitReservation, ReleaseReservation, ReserveStock
from domain.orders.commands import CancelOrder, FulfilOrder
from domain.payments.commands import RefundPayment, RequestPayment

ORDER = "order-1"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LINES = (FulfilmentLine("SKU-A", 2), FulfilmentLine("SKU-B", 1))
TOTAL = Decimal("29.97")
DEADLINE = (T0 + DEFAULT_TIMEOUT).isoformat()


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


confirmed = OrderConfirmed("e-confirmed", T0, ORDER, LINES, TOTAL)
reserved_a = StockReserved("e-res-a", at(1), ORDER, "SKU-A", 2)
reserved_b = StockReserved("e-res-b", at(2), ORDER, "SKU-B", 1)
refused_b = ReservationRefused("e-ref-b", at(2), ORDER, "SKU-B", "only 0 available")
authorized = PaymentAuthorized("e-auth", at(3), ORDER)
declined = PaymentDeclined("e-decl", at(3), ORDER, "card expired")
timed_out = FulfilmentTimedOut("e-timeout", at(15), ORDER, DEADLINE)
order_fulfilled = OrderFulfilled("e-fulfilled", at(4), ORDER)
HAPPY = [confirmed, reserved_a, reserved_b, authorized, order_fulfilled]
customer_cancel = OrderCancelled("e-customer", at(3.5), ORDER, "customer changed mind")


def reserve(cause: str, sku: str, quantity: int) -> OutgoingCommand:
    return OutgoingCommand(
        command_id(cause, "reserve", sku), "inventory", ReserveStock(sku, ORDER, quantity)
    )


def release(cause: str, sku: str) -> OutgoingCommand:
    return OutgoingCommand(
        command_id(cause, "release", sku), "inventory", ReleaseReservation(sku, ORDER)
    )


def commit(cause: str, sku: str) -> OutgoingCommand:
    return OutgoingCommand(
        command_id(cause, "commit", sku), "inventory", CommitReservation(sku, ORDER)
    )


def cancel(cause: str, reason: str) -> OutgoingCommand:
    return OutgoingCommand(command_id(cause, "cancel"), "orders", CancelOrder(ORDER, reason))


@dataclass(frozen=True)
class Scenario:
    state: FulfilmentState
    history: tuple[WorkflowEvent, ...]

    def when(self, fact: Input, timeout: timedelta = DEFAULT_TIMEOUT) -> Decision:
        decision = decide(self.state, fact, timeout=timeout)
        assert decide(self.state, fact, timeout=timeout) == decision  # pure
        return decision

    def then_state(self, fact: Input) -> FulfilmentState:
        state = self.state
        for event in decide(state, fact).events:
            state = state.apply(event)
        return state


def given(*inputs: Input, timeout: timedelta = DEFAULT_TIMEOUT) -> Scenario:
    state = FulfilmentState(ORDER)
    history: list[WorkflowEvent] = []
    for fact in inputs:
        for event in decide(state, fact, timeout=timeout).events:
            state = state.apply(event)
            history.append(event)
    assert rebuild(ORDER, history) == state
    return Scenario(state, tuple(history))


# --------------------------------------------------------------------------- the happy path


def test_a_confirmed_order_reserves_every_line_and_schedules_its_timeout() -> None:
    decision = given().when(confirmed)
    assert decision.events == [
        FulfilmentStarted("e-confirmed", LINES, TOTAL, "EUR", T0.isoformat(), DEADLINE, 15 * 60)
    ]
    assert decision.commands == [
        reserve("e-confirmed", "SKU-A", 2),
        reserve("e-confirmed", "SKU-B", 1),
    ]
    assert decision.timeouts == [
        ScheduleTimeout(command_id("e-confirmed", "timeout"), ORDER, T0 + DEFAULT_TIMEOUT, DEADLINE)
    ]
    state = given(confirmed).state
    assert (state.status, state.is_terminal, state.waiting_since) == (
        WorkflowStatus.RESERVING,
        False,
        T0.isoformat(),
    )
    assert state.waiting_for == "stock reservation: SKU-A, SKU-B"


def test_the_timeout_is_configurable() -> None:
    decision = given().when(confirmed, timeout=timedelta(minutes=5))
    assert decision.timeouts[0].deadline == at(5)
    state = given(confirmed, timeout=timedelta(minutes=5)).state
    assert state.deadline == at(5).isoformat()
    cancelled = given(confirmed, timeout=timedelta(minutes=5)).when(
        FulfilmentTimedOut("e-t", at(5), ORDER, at(5).isoformat())
    )
    assert cancelled.commands == [cancel("e-t", "timed out after 5 min")]


def test_a_partial_reservation_only_waits_for_the_rest() -> None:
    decision = given(confirmed).when(reserved_a)
    assert decision == Decision(
        [StockReservationNoted("e-res-a", "SKU-A", 2, at(1).isoformat())], [], []
    )
    assert given(confirmed, reserved_a).state.waiting_for == "stock reservation: SKU-B"


def test_all_reserved_requests_the_order_total() -> None:
    decision = given(confirmed, reserved_a).when(reserved_b)
    assert decision.events[-1] == PaymentRequestIssued("e-res-b", TOTAL, "EUR", at(2).isoformat())
    assert decision.commands == [
        OutgoingCommand(
            command_id("e-res-b", "request-payment"), "payments", RequestPayment(ORDER, TOTAL)
        )
    ]
    state = given(confirmed, reserved_a, reserved_b).state
    assert (state.status, state.waiting_for, state.waiting_since) == (
        WorkflowStatus.AWAITING_PAYMENT,
        "payment authorization",
        at(2).isoformat(),
    )


def test_payment_authorized_asks_the_order_to_fulfil_itself_and_commits_nothing_yet() -> None:
    decision = given(confirmed, reserved_a, reserved_b).when(authorized)
    assert decision.events == [
        PaymentAuthorizationNoted("e-auth", at(3).isoformat()),
        FulfilmentRequested("e-auth", at(3).isoformat()),
    ]
    assert decision.commands == [
        OutgoingCommand(command_id("e-auth", "fulfil"), "orders", FulfilOrder(ORDER)),
    ]
    state = given(confirmed, reserved_a, reserved_b, authorized).state
    assert (state.status, state.is_terminal, state.waiting_for) == (
        WorkflowStatus.AWAITING_FULFILMENT,
        False,
        "order fulfilment",
    )


def test_the_order_fulfilled_commits_every_reservation_and_ends_the_workflow() -> None:
    decision = given(confirmed, reserved_a, reserved_b, authorized).when(order_fulfilled)
    assert decision.events[-1] == FulfilmentCompleted(
        "e-fulfilled", ("SKU-A", "SKU-B"), (), at(4).isoformat()
    )
    assert decision.commands == [commit("e-fulfilled", "SKU-A"), commit("e-fulfilled", "SKU-B")]
    state = given(*HAPPY).state
    assert (state.status, state.is_terminal, state.waiting_for) == (
        WorkflowStatus.FULFILLED,
        True,
        None,
    )


# --------------------------------------------------------------------------- compensation


def test_a_refused_reservation_releases_what_was_reserved_and_cancels_the_order() -> None:
    decision = given(confirmed, reserved_a).when(refused_b)
    reason = "stock unavailable: sku SKU-B (only 0 available)"
    assert decision.events[-1] == FulfilmentCancelled(
        "e-ref-b", reason, ("SKU-A",), False, at(2).isoformat()
    )
    assert decision.commands == [release("e-ref-b", "SKU-A"), cancel("e-ref-b", reason)]
    state = given(confirmed, reserved_a, refused_b).state
    assert (state.status, state.cancel_reason, state.is_terminal) == (
        WorkflowStatus.CANCELLED,
        reason,
        True,
    )


def test_a_declined_payment_releases_every_reservation_and_cancels() -> None:
    decision = given(confirmed, reserved_a, reserved_b).when(declined)
    assert decision.commands == [
        release("e-decl", "SKU-A"),
        release("e-decl", "SKU-B"),
        cancel("e-decl", "payment declined: card expired"),
    ]


def test_the_timeout_before_completion_releases_and_cancels() -> None:
    decision = given(confirmed, reserved_a).when(timed_out)
    assert decision.commands == [
        release("e-timeout", "SKU-A"),
        cancel("e-timeout", "timed out after 15 min"),
    ]
    assert not given(confirmed, reserved_a).state.is_stuck(at(16), timedelta(minutes=5))
    assert given(confirmed, reserved_a).state.is_stuck(at(21), timedelta(minutes=5))
    assert not given(confirmed, reserved_a, timed_out).state.is_stuck(at(60), timedelta(0))


def test_the_timeout_while_the_order_decides_its_fulfilment_does_nothing() -> None:
    """FulfilOrder was sent: the Order aggregate arbitrates, the timer must not compensate."""
    assert given(confirmed, reserved_a, reserved_b, authorized).when(timed_out) == Decision(
        [], [], []
    )


# --------------------------------------------------------------------------- customer cancels


def refund(cause: str, reason: str) -> OutgoingCommand:
    return OutgoingCommand(command_id(cause, "refund"), "payments", RefundPayment(ORDER, reason))


def test_a_customer_cancellation_while_reserving_releases_and_sends_no_cancel_order() -> None:
    decision = given(confirmed, reserved_a).when(customer_cancel)
    assert decision.events[-1] == FulfilmentWithdrawn(
        "e-customer", "customer changed mind", ("SKU-A",), False, at(3.5).isoformat()
    )
    assert decision.commands == [release("e-customer", "SKU-A")]
    state = given(confirmed, reserved_a, customer_cancel).state
    assert (state.status, state.cancel_reason, state.is_terminal) == (
        WorkflowStatus.CANCELLED,
        "customer changed mind",
        True,
    )


def test_a_customer_cancellation_awaiting_payment_releases_everything() -> None:
    decision = given(confirmed, reserved_a, reserved_b).when(customer_cancel)
    assert decision.commands == [release("e-customer", "SKU-A"), release("e-customer", "SKU-B")]


def test_a_customer_cancellation_winning_the_race_with_fulfil_order_refunds_the_payment() -> None:
    """FulfilOrder was sent but the customer's CancelOrder got there first: orders.cancelled."""
    decision = given(confirmed, reserved_a, reserved_b, authorized).when(customer_cancel)
    assert decision.commands == [
        release("e-customer", "SKU-A"),
        release("e-customer", "SKU-B"),
        refund("e-customer", "customer changed mind"),
    ]
    state = given(confirmed, reserved_a, reserved_b, authorized, customer_cancel).state
    assert state.status is WorkflowStatus.CANCELLED
    assert state.committed == frozenset()


def test_late_facts_after_a_customer_cancellation_are_compensated_once() -> None:
    scenario = given(confirmed, reserved_a, customer_cancel)
    assert scenario.when(reserved_b).commands == [release("e-res-b", "SKU-B")]
    late_auth = given(confirmed, reserved_a, customer_cancel, reserved_b).when(authorized)
    assert late_auth.commands == [refund("e-auth", "order already cancelled")]
    done = given(confirmed, reserved_a, customer_cancel, reserved_b, authorized)
    for fact in (reserved_b, authorized, customer_cancel, timed_out, order_fulfilled):
        assert done.when(fact) == Decision([], [], [])


def test_the_workflows_own_cancellation_coming_back_changes_nothing() -> None:
    own = OrderCancelled("e-own", at(3), ORDER, "stock unavailable: sku SKU-B (only 0 available)")
    assert given(confirmed, reserved_a, refused_b).when(own) == Decision([], [], [])
    assert given(confirmed, reserved_a, timed_out).when(own) == Decision([], [], [])


def test_a_customer_cancellation_before_the_confirmation_ends_it_when_it_arrives() -> None:
    decision = given(customer_cancel).when(confirmed)
    assert [type(event) for event in decision.events] == [FulfilmentStarted, FulfilmentWithdrawn]
    state = given(customer_cancel, confirmed).state
    assert state.status is WorkflowStatus.CANCELLED
    assert given(customer_cancel, confirmed).when(reserved_a).commands == [
        release("e-res-a", "SKU-A")
    ]


def test_a_customer_cancellation_after_fulfilment_changes_nothing() -> None:
    assert given(*HAPPY).when(customer_cancel) == Decision([], [], [])


@pytest.mark.parametrize(
    "history",
    [(confirmed, reserved_a, reserved_b, authorized, order_fulfilled), (confirmed, refused_b)],
    ids=["after-fulfilment", "after-cancellation"],
)
def test_a_timeout_after_completion_does_nothing(history: tuple[Input, ...]) -> None:
    assert given(*history).when(timed_out) == Decision([], [], [])


def test_a_stale_timeout_token_does_nothing() -> None:
    stale = FulfilmentTimedOut("e-old", at(15), ORDER, at(99).isoformat())
    assert given(confirmed, reserved_a).when(stale) == Decision([], [], [])
    assert given().when(timed_out) == Decision([], [], [])  # never started


# --------------------------------------------------------------------------- duplicates, order


@pytest.mark.parametrize(
    "history",
    [
        (confirmed,),
        (confirmed, reserved_a),
        (confirmed, reserved_a, reserved_b, authorized),
        (confirmed, reserved_a, reserved_b, authorized, order_fulfilled),
        (confirmed, reserved_a, customer_cancel),
    ],
    ids=["started", "reserving", "fulfilling", "fulfilled", "cancelled-by-customer"],
)
def test_an_input_already_applied_gives_no_events_and_no_commands(
    history: tuple[Input, ...],
) -> None:
    scenario = given(*history)
    for fact in history:
        assert scenario.when(fact) == Decision([], [], [])


def test_the_same_fact_under_another_event_id_gives_nothing() -> None:
    again = StockReserved("e-res-a-2", at(4), ORDER, "SKU-A", 2)
    assert given(confirmed, reserved_a).when(again) == Decision([], [], [])
    other_confirmation = OrderConfirmed("e-confirmed-2", at(1), ORDER, LINES, TOTAL)
    assert given(confirmed).when(other_confirmation) == Decision([], [], [])


def test_a_reservation_after_cancellation_is_released_once() -> None:
    scenario = given(confirmed, refused_b)
    late = StockReserved("e-late-a", at(5), ORDER, "SKU-A", 2)
    decision = scenario.when(late)
    assert decision.events[-1] == LateReservationReleased("e-late-a", "SKU-A", at(5).isoformat())
    assert decision.commands == [release("e-late-a", "SKU-A")]
    assert given(confirmed, refused_b, late).when(late) == Decision([], [], [])
    twin = StockReserved("e-late-a-twin", at(6), ORDER, "SKU-A", 2)
    assert given(confirmed, refused_b, late).when(twin) == Decision([], [], [])


def test_a_payment_authorized_after_cancellation_is_refunded_once() -> None:
    scenario = given(confirmed, reserved_a, reserved_b, timed_out)
    decision = scenario.when(authorized)
    assert decision.events[-1] == LatePaymentRefunded("e-auth", at(3).isoformat())
    assert decision.commands == [
        OutgoingCommand(
            command_id("e-auth", "refund"),
            "payments",
            RefundPayment(ORDER, "order already cancelled"),
        )
    ]
    twin = PaymentAuthorized("e-auth-twin", at(4), ORDER)
    assert given(confirmed, reserved_a, reserved_b, timed_out, authorized).when(twin) == Decision(
        [], [], []
    )


def test_facts_before_the_confirmation_are_kept_until_it_arrives() -> None:
    decision = given(reserved_b, reserved_a).when(confirmed)
    assert [type(event) for event in decision.events] == [FulfilmentStarted, PaymentRequestIssued]
    assert [c.command_type for c in decision.commands] == [
        "ReserveStock",
        "ReserveStock",
        "RequestPayment",
    ]


def test_a_decline_or_refusal_after_fulfilment_or_cancellation_changes_nothing() -> None:
    fulfilled = given(*HAPPY)
    assert fulfilled.when(declined) == Decision([], [], [])
    cancelled = given(confirmed, refused_b)
    assert cancelled.when(declined) == Decision([], [], [])
    assert cancelled.when(ReservationRefused("e-x", at(9), ORDER, "SKU-A", "none")) == Decision(
        [], [], []
    )


def test_an_input_for_another_order_is_a_wiring_bug() -> None:
    with pytest.raises(ValueError, match="not about order"):
        decide(FulfilmentState("order-2"), confirmed)


def test_the_commands_of_an_applied_input_can_be_sent_again_with_the_same_ids() -> None:
    """A crash between appending the events and sending the commands loses nothing."""
    scenario = given(confirmed, reserved_a, reserved_b)
    decision = scenario.when(authorized)
    history = [*scenario.history, *decision.events]
    assert commands_recorded_for(ORDER, history, "e-auth") == decision.commands
    assert commands_recorded_for(ORDER, history, "e-confirmed") == [
        reserve("e-confirmed", "SKU-A", 2),
        reserve("e-confirmed", "SKU-B", 1),
    ]
    assert stream_name(ORDER) == "fulfilment-order-1"


# --------------------------------------------------------------------------- property


def effects(decisions: list[Decision]) -> list[tuple[str, str]]:
    keys = []
    for decision in decisions:
        for command in decision.commands:
            sku = getattr(command.command, "sku", "")
            keys.append((command.command_type, sku))
    return keys


def run(inputs: list[Input]) -> tuple[FulfilmentState, list[Decision]]:
    state = FulfilmentState(ORDER)
    decisions = []
    for fact in inputs:
        decision = decide(state, fact)
        for event in decision.events:
            state = state.apply(event)
        decisions.append(decision)
    return state, decisions


@st.composite
def shuffled_with_duplicates(draw: st.DrawFn, inputs: list[Input]) -> list[Input]:
    with_duplicates = inputs + draw(st.lists(st.sampled_from(inputs), max_size=6))
    return draw(st.permutations(with_duplicates))


@settings(max_examples=300, deadline=None)
@hypothesis_given(inputs=shuffled_with_duplicates(HAPPY))
def test_any_order_and_duplication_of_a_happy_workflow_has_the_ordered_runs_effects(
    inputs: list[Input],
) -> None:
    ordered_state, ordered = run(HAPPY)
    state, decisions = run(inputs)
    assert sorted(effects(decisions)) == sorted(effects(ordered))
    ids = [c.command_id for d in decisions for c in d.commands]
    assert len(ids) == len(set(ids))  # no command sent twice under two ids, nor twice at all
    assert state.status is ordered_state.status is WorkflowStatus.FULFILLED
    assert rebuild(ORDER, [e for d in decisions for e in d.events]) == state


@st.composite
def consistent_facts(draw: st.DrawFn) -> list[Input]:
    """One possible world (SKU-B reserved or refused, the payment authorized or declined,
    maybe a timeout, maybe the customer's cancellation; or the Order fulfilled after all
    went well), each fact possibly duplicated, all in any order."""
    facts: list[Input] = [confirmed]
    if draw(st.booleans()):
        facts += [reserved_a, reserved_b, authorized, order_fulfilled]
    else:
        if draw(st.booleans()):
            facts.append(reserved_a)
        facts += draw(st.sampled_from([[reserved_b], [refused_b], []]))
        facts += draw(st.sampled_from([[authorized], [declined], []]))
        if draw(st.booleans()):
            facts.append(timed_out)
        if draw(st.booleans()):
            facts.append(customer_cancel)
    facts += draw(st.lists(st.sampled_from(facts), max_size=5))
    return draw(st.permutations(facts))


@settings(max_examples=500, deadline=None)
@hypothesis_given(inputs=consistent_facts())
def test_every_workflow_keeps_its_books_whatever_arrives_in_whatever_order(
    inputs: list[Input],
) -> None:
    """No reservation is both committed and released; nothing happens twice; a cancelled
    workflow releases exactly what was reserved and refunds exactly what was authorized;
    a fulfilled one commits every line; a decisive input after the start ends the workflow;
    CancelOrder goes out only when the workflow itself cancels (never after the customer)."""
    state, decisions = run(inputs)
    keys = effects(decisions)
    assert len(keys) == len(set(keys)), keys
    committed = {sku for kind, sku in keys if kind == "CommitReservation"}
    released = {sku for kind, sku in keys if kind == "ReleaseReservation"}
    refunds = keys.count(("RefundPayment", ""))
    seen_reserved = {f.sku for f in inputs if isinstance(f, StockReserved)}
    assert not committed & released
    assert keys.count(("FulfilOrder", "")) == int(state.fulfil_requested)
    assert keys.count(("CancelOrder", "")) == int(
        state.status is WorkflowStatus.CANCELLED and state.order_cancel_reason is None
    )
    if order_fulfilled in inputs:
        assert state.status is WorkflowStatus.FULFILLED
    # A timeout is scheduled by the start, so one "before" it is a stray and is ignored;
    # a refusal or decline noted before the start decides as soon as the start arrives;
    # once FulfilOrder is sent, the timeout leaves the decision to the Order aggregate.
    start = inputs.index(confirmed)
    decisive = any(
        isinstance(f, ReservationRefused | PaymentDeclined | OrderCancelled) for f in inputs
    ) or (
        any(isinstance(f, FulfilmentTimedOut) for f in inputs[start:])
        and not state.fulfil_requested
    )
    if decisive:
        assert state.is_terminal
    if state.status is WorkflowStatus.CANCELLED:
        assert released == seen_reserved
        assert not committed
        assert refunds == int(state.payment_authorized)
    if state.status is WorkflowStatus.FULFILLED:
        assert committed == {"SKU-A", "SKU-B"}
        assert not released
        assert not refunds
    if not state.is_terminal:
        assert not committed
        assert not released
        assert not refunds


def test_the_first_decisive_fact_names_the_reason() -> None:
    for first, reason in [
        (refused_b, "stock unavailable: sku SKU-B (only 0 available)"),
        (declined, "payment declined: card expired"),
        (timed_out, "timed out after 15 min"),
    ]:
        for rest in itertools.permutations(
            [f for f in (refused_b, declined, timed_out) if f != first]
        ):
            state, _ = run([confirmed, reserved_a, first, *rest])
            assert state.cancel_reason == reason
