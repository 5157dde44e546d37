"""The order-fulfilment process manager as pure functions: state, `decide`, `rebuild`.

`decide(state, fact)` first notes the fact (unless it was already applied), then works out
what the facts noted so far call for. Deciding from the accumulated facts, not from the order
they arrived in, is what makes the workflow cope with out-of-order and duplicated inputs:

* an input whose event id was already applied, or a fact already known → nothing;
* confirmed → reserve every line, and schedule the timeout;
* every line reserved → request the total;
* requested and authorized → ask the order to fulfil itself (FulfilOrder), and wait: the
  Order aggregate arbitrates a race with its customer's CancelOrder;
* the order fulfilled (`orders.fulfilled`) → commit every reservation: fulfilled;
* a refusal, a decline or the timeout before FulfilOrder was sent → release what was
  reserved, refund an authorized payment, cancel the order with the reason;
* the order cancelled by its customer (`orders.cancelled`) before the workflow ended →
  release what was reserved, refund an authorized payment, end cancelled with the customer's
  reason (no CancelOrder: the order is already cancelled); the workflow's own cancellation
  coming back as `orders.cancelled` finds it ended, and changes nothing;
* after cancellation, a late reservation is released and a late authorization refunded;
  after completion, nothing happens any more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType

from domain.fulfilment.events import (
    FulfilmentCancelled,
    FulfilmentCompleted,
    FulfilmentRequested,
    FulfilmentStarted,
    FulfilmentWithdrawn,
    LatePaymentRefunded,
    LateReservationReleased,
    OrderCancellationNoted,
    OrderFulfilmentNoted,
    PaymentAuthorizationNoted,
    PaymentDeclineNoted,
    PaymentRequestIssued,
    ReservationRefusalNoted,
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
from domain.fulfilment.outgoing import (
    OutgoingCommand,
    ScheduleTimeout,
    commands_for,
    timeouts_for,
)
from domain.payments.commands import DEFAULT_CURRENCY

DEFAULT_TIMEOUT = timedelta(minutes=15)
STREAM_PREFIX = "fulfilment-"


class WorkflowStatus(StrEnum):
    NOT_STARTED = "not_started"
    RESERVING = "reserving"
    AWAITING_PAYMENT = "awaiting_payment"
    AWAITING_FULFILMENT = "awaiting_fulfilment"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"


_EMPTY: Mapping[str, int] = MappingProxyType({})
_NO_REASONS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class FulfilmentState:
    order_id: str
    version: int = 0
    applied_inputs: frozenset[str] = frozenset()
    """Event ids of the inputs already applied: a redelivery of one of them changes nothing."""
    lines: tuple[FulfilmentLine, ...] | None = None
    total: Decimal | None = None
    currency: str = DEFAULT_CURRENCY
    started_at: str | None = None
    deadline: str | None = None
    timeout_seconds: int = int(DEFAULT_TIMEOUT.total_seconds())
    reserved: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    refused: Mapping[str, str] = field(default_factory=lambda: _NO_REASONS)
    payment_authorized: bool = False
    decline_reason: str | None = None
    payment_requested: bool = False
    fulfil_requested: bool = False
    """FulfilOrder was sent: only the order's answer (fulfilled or cancelled) ends it now."""
    order_fulfilled: bool = False
    order_cancel_reason: str | None = None
    """The reason of a cancellation from outside the workflow (its customer's), once noted."""
    outcome: WorkflowStatus | None = None
    cancel_reason: str | None = None
    released: frozenset[str] = frozenset()
    """SKUs whose release was sent (at cancellation or late): never released twice."""
    committed: frozenset[str] = frozenset()
    refunded: bool = False
    waiting_since: str | None = None
    """When the workflow last made progress: with `deadline`, how "stuck" is detected."""

    @property
    def started(self) -> bool:
        return self.lines is not None

    @property
    def is_terminal(self) -> bool:
        return self.outcome is not None

    @property
    def status(self) -> WorkflowStatus:
        if self.outcome is not None:
            return self.outcome
        if self.lines is None:
            return WorkflowStatus.NOT_STARTED
        if self.fulfil_requested:
            return WorkflowStatus.AWAITING_FULFILMENT
        if self.payment_requested:
            return WorkflowStatus.AWAITING_PAYMENT
        return WorkflowStatus.RESERVING

    @property
    def missing_reservations(self) -> tuple[str, ...]:
        return tuple(line.sku for line in self.lines or () if line.sku not in self.reserved)

    @property
    def waiting_for(self) -> str | None:
        """What the workflow waits for, in words; None once terminal."""
        match self.status:
            case WorkflowStatus.NOT_STARTED:
                return "order confirmation"
            case WorkflowStatus.RESERVING:
                return "stock reservation: " + ", ".join(self.missing_reservations)
            case WorkflowStatus.AWAITING_PAYMENT:
                return "payment authorization"
            case WorkflowStatus.AWAITING_FULFILMENT:
                return "order fulfilment"
        return None

    def is_stuck(self, now: datetime, margin: timedelta) -> bool:
        """Past its deadline plus `margin` and still not terminal: its timeout never came."""
        if self.is_terminal or self.deadline is None:
            return False
        return now > datetime.fromisoformat(self.deadline) + margin

    def apply(self, event: WorkflowEvent) -> FulfilmentState:
        """The state after `event`. Each applied event is one version."""
        state = replace(
            self, version=self.version + 1, applied_inputs=self.applied_inputs | {event.cause}
        )
        match event:
            case FulfilmentStarted():
                return replace(
                    state,
                    lines=event.lines,
                    total=event.total,
                    currency=event.currency,
                    started_at=event.started_at,
                    deadline=event.deadline,
                    timeout_seconds=event.timeout_seconds,
                    waiting_since=event.started_at,
                )
            case StockReservationNoted(sku=sku, quantity=quantity):
                return replace(
                    state,
                    reserved=MappingProxyType({**self.reserved, sku: quantity}),
                    waiting_since=event.at,
                )
            case ReservationRefusalNoted(sku=sku, reason=reason):
                return replace(state, refused=MappingProxyType({**self.refused, sku: reason}))
            case PaymentAuthorizationNoted():
                return replace(state, payment_authorized=True)
            case PaymentDeclineNoted(reason=reason):
                return replace(state, decline_reason=reason)
            case PaymentRequestIssued():
                return replace(state, payment_requested=True, waiting_since=event.at)
            case FulfilmentRequested():
                return replace(state, fulfil_requested=True, waiting_since=event.at)
            case OrderFulfilmentNoted():
                return replace(state, order_fulfilled=True)
            case OrderCancellationNoted(reason=reason):
                return replace(state, order_cancel_reason=reason)
            case FulfilmentCompleted(committed=committed, released=released):
                return replace(
                    state,
                    outcome=WorkflowStatus.FULFILLED,
                    committed=self.committed | set(committed),
                    released=self.released | set(released),
                    waiting_since=event.at,
                )
            case (
                FulfilmentCancelled(reason=reason, released=released, refund=refund)
                | FulfilmentWithdrawn(reason=reason, released=released, refund=refund)
            ):
                return replace(
                    state,
                    outcome=WorkflowStatus.CANCELLED,
                    cancel_reason=reason,
                    released=self.released | set(released),
                    refunded=self.refunded or refund,
                    waiting_since=event.at,
                )
            case LateReservationReleased(sku=sku):
                return replace(state, released=self.released | {sku})
            case LatePaymentRefunded():
                return replace(state, refunded=True)


def stream_name(order_id: str) -> str:
    return STREAM_PREFIX + order_id


def rebuild(order_id: str, events: Iterable[WorkflowEvent]) -> FulfilmentState:
    state = FulfilmentState(order_id)
    for event in events:
        state = state.apply(event)
    return state


@dataclass(frozen=True, slots=True)
class Decision:
    """What one input leads to: events to append, then commands and timeouts to send."""

    events: list[WorkflowEvent]
    commands: list[OutgoingCommand]
    timeouts: list[ScheduleTimeout]


NOTHING = Decision([], [], [])


def decide(
    state: FulfilmentState, fact: Input, *, timeout: timedelta = DEFAULT_TIMEOUT
) -> Decision:
    """The workflow's answer to `fact`. Pure: the same state and fact give the same decision.

    `timeout` is read only when the order confirmation starts the workflow; the deadline it
    gives is stored, so changing the setting never moves the deadline of a running workflow.
    """
    if fact.order_id != state.order_id:
        raise ValueError(f"{fact!r} is not about order {state.order_id!r}")
    if fact.event_id in state.applied_inputs:
        return NOTHING
    noted = _note(state, fact, timeout)
    if not noted:  # nothing new: the last decision already took every step the facts allow
        return NOTHING
    current = state
    for event in noted:
        current = current.apply(event)
    events = [*noted, *_progress(current, fact)]
    return Decision(
        events=events,
        commands=[c for event in events for c in commands_for(state.order_id, event)],
        timeouts=[t for event in events for t in timeouts_for(state.order_id, event)],
    )


def commands_recorded_for(
    order_id: str, history: Iterable[WorkflowEvent], cause: str
) -> list[OutgoingCommand]:
    """The commands input `cause` led to, from the recorded history.

    For the worker that finds an input already applied (a crash after appending, before
    sending): sending these again is safe, their ids are those of the first attempt.
    """
    return [c for event in history if event.cause == cause for c in commands_for(order_id, event)]


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _note(state: FulfilmentState, fact: Input, timeout: timedelta) -> list[WorkflowEvent]:
    """The event that records `fact`, unless it adds nothing to what is known."""
    cause, at = fact.event_id, _iso(fact.occurred_at)
    match fact:
        case OrderConfirmed():
            if state.started:
                return []
            return [
                FulfilmentStarted(
                    cause=cause,
                    lines=fact.lines,
                    total=fact.total,
                    currency=DEFAULT_CURRENCY,
                    started_at=at,
                    deadline=_iso(fact.occurred_at + timeout),
                    timeout_seconds=int(timeout.total_seconds()),
                )
            ]
        case StockReserved(sku=sku, quantity=quantity):
            if sku in state.reserved:
                return []
            return [StockReservationNoted(cause=cause, sku=sku, quantity=quantity, at=at)]
        case ReservationRefused(sku=sku, reason=reason):
            if sku in state.refused or sku in state.reserved or state.is_terminal:
                return []
            return [ReservationRefusalNoted(cause=cause, sku=sku, reason=reason, at=at)]
        case PaymentAuthorized():
            if state.payment_authorized or state.decline_reason is not None:
                return []
            return [PaymentAuthorizationNoted(cause=cause, at=at)]
        case PaymentDeclined(reason=reason):
            if state.payment_authorized or state.decline_reason is not None or state.is_terminal:
                return []
            return [PaymentDeclineNoted(cause=cause, reason=reason, at=at)]
        case FulfilmentTimedOut(token=token):
            if state.is_terminal or state.fulfil_requested:
                return []  # after completion, or the order's answer is pending: it decides
            if state.deadline is None or token != state.deadline:
                return []  # a stale timer
            return [_cancel(state, cause, at, f"timed out after {_duration(state)}")]
        case OrderFulfilled():
            if state.order_fulfilled or state.is_terminal:
                return []
            return [OrderFulfilmentNoted(cause=cause, at=at)]
        case OrderCancelled(reason=reason):
            if state.order_cancel_reason is not None or state.is_terminal:
                return []  # already known, or the workflow's own cancellation coming back
            return [OrderCancellationNoted(cause=cause, reason=reason, at=at)]
    raise TypeError(f"not a fulfilment input: {fact!r}")  # pragma: no cover


def _progress(state: FulfilmentState, fact: Input) -> list[WorkflowEvent]:
    """The step the facts now call for, if any. `state` already holds the noted fact."""
    cause, at = fact.event_id, _iso(fact.occurred_at)
    if state.outcome is WorkflowStatus.CANCELLED:
        return _compensate_late(state, cause, at)
    if state.outcome is not None or not state.started:
        return []
    if state.order_cancel_reason is not None:
        return [_withdraw(state, cause, at, state.order_cancel_reason)]
    if state.fulfil_requested:
        return _complete(state, cause, at)
    if state.refused:
        sku, reason = next(iter(state.refused.items()))
        return [_cancel(state, cause, at, f"stock unavailable: sku {sku} ({reason})")]
    if state.decline_reason is not None:
        return [_cancel(state, cause, at, f"payment declined: {state.decline_reason}")]
    steps: list[WorkflowEvent] = []
    if not state.payment_requested and not state.missing_reservations:
        assert state.total is not None
        steps.append(PaymentRequestIssued(cause, state.total, state.currency, at))
        state = state.apply(steps[-1])
    if state.payment_requested and state.payment_authorized:
        steps.append(FulfilmentRequested(cause, at))
        steps += _complete(state.apply(steps[-1]), cause, at)
    return steps


def _complete(state: FulfilmentState, cause: str, at: str) -> list[WorkflowEvent]:
    """FulfilOrder was sent: once the order is fulfilled, commit what it reserved."""
    if not state.order_fulfilled:
        return []
    skus = {line.sku for line in state.lines or ()}
    committed = tuple(sku for sku in state.reserved if sku in skus)
    strays = tuple(sku for sku in state.reserved if sku not in skus)
    return [FulfilmentCompleted(cause, committed, strays, at)]


def _cancel(state: FulfilmentState, cause: str, at: str, reason: str) -> FulfilmentCancelled:
    released = tuple(sku for sku in state.reserved if sku not in state.released)
    return FulfilmentCancelled(
        cause=cause, reason=reason, released=released, refund=state.payment_authorized, at=at
    )


def _withdraw(state: FulfilmentState, cause: str, at: str, reason: str) -> FulfilmentWithdrawn:
    released = tuple(sku for sku in state.reserved if sku not in state.released)
    return FulfilmentWithdrawn(
        cause=cause, reason=reason, released=released, refund=state.payment_authorized, at=at
    )


def _compensate_late(state: FulfilmentState, cause: str, at: str) -> list[WorkflowEvent]:
    late: list[WorkflowEvent] = [
        LateReservationReleased(cause, sku, at)
        for sku in state.reserved
        if sku not in state.released
    ]
    if state.payment_authorized and not state.refunded:
        late.append(LatePaymentRefunded(cause, at))
    return late


def _duration(state: FulfilmentState) -> str:
    seconds = state.timeout_seconds
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
