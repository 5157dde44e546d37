"""The Payment aggregate: one order's payment, rebuilt from events, and `decide` for the rules.

requested → authorized → refunded, or requested → declined (final).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from domain.payments.commands import (
    AuthorizePayment,
    Command,
    DeclinePayment,
    RefundPayment,
    RequestPayment,
)
from domain.payments.errors import (
    AmountMismatch,
    InvalidAmount,
    InvalidPaymentField,
    PaymentAlreadyAuthorized,
    PaymentAlreadyRefunded,
    PaymentAlreadyRequested,
    PaymentIsDeclined,
    PaymentNotAuthorized,
    PaymentNotRequested,
)
from domain.payments.events import (
    DomainEvent,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentRefunded,
    PaymentRequested,
)
from domain.rules import clipped

AMOUNT_DECIMAL_PLACES = 2
# An order's total is at most 100 lines * 1000 units * 1,000,000.00: this bound covers it.
MAX_AMOUNT = Decimal("100000000000.00")
MAX_TEXT_CHARS = 500


class PaymentStatus(StrEnum):
    REQUESTED = "requested"
    AUTHORIZED = "authorized"
    DECLINED = "declined"
    REFUNDED = "refunded"


@dataclass(frozen=True, slots=True)
class Payment:
    order_id: str
    version: int = 0
    status: PaymentStatus | None = None
    amount: Decimal | None = None
    currency: str | None = None
    provider_reference: str | None = None
    decline_reason: str | None = None
    refund_reason: str | None = None

    @property
    def exists(self) -> bool:
        return self.status is not None

    def apply(self, event: DomainEvent) -> Payment:
        """The state after `event`. Each applied event is one version."""
        version = self.version + 1
        match event:
            case PaymentRequested(amount=amount, currency=currency):
                return replace(
                    self,
                    version=version,
                    status=PaymentStatus.REQUESTED,
                    amount=amount,
                    currency=currency,
                )
            case PaymentAuthorized(provider_reference=reference):
                return replace(
                    self,
                    version=version,
                    status=PaymentStatus.AUTHORIZED,
                    provider_reference=reference,
                )
            case PaymentDeclined(reason=reason):
                return replace(
                    self, version=version, status=PaymentStatus.DECLINED, decline_reason=reason
                )
            case PaymentRefunded(reason=reason):
                return replace(
                    self, version=version, status=PaymentStatus.REFUNDED, refund_reason=reason
                )


def rebuild(order_id: str, events: Iterable[DomainEvent]) -> Payment:
    state = Payment(order_id)
    for event in events:
        state = state.apply(event)
    return state


def decide(state: Payment, command: Command) -> list[DomainEvent]:
    """The events that `command` produces on `state`, or a PaymentRuleViolation."""
    if isinstance(command, RequestPayment):
        return _request(state, command)
    if not state.exists:
        raise PaymentNotRequested(
            f"no payment was requested for order {command.order_id!r}",
            order_id=command.order_id,
        )
    match command:
        case AuthorizePayment():
            return _authorize(state, command)
        case DeclinePayment():
            _refuse_unless_awaiting_answer(state, "decline")
            return [PaymentDeclined(reason=_required_text("reason", command.reason))]
        case RefundPayment():
            return _refund(state, command)
    raise TypeError(f"not a payment command: {command!r}")  # pragma: no cover


def _request(state: Payment, command: RequestPayment) -> list[DomainEvent]:
    _required_text("order_id", command.order_id)
    if state.exists:
        raise PaymentAlreadyRequested(
            f"payment for order {state.order_id!r} was already requested "
            f"({state.amount} {state.currency}, now {state.status})",
            order_id=state.order_id,
            status=str(state.status),
        )
    amount = _valid_amount(command.amount)
    currency = _required_text("currency", command.currency)
    if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
        raise InvalidPaymentField(
            f"currency must be a three-letter ISO 4217 code, got {clipped(repr(currency), 40)}",
            field="currency",
        )
    return [PaymentRequested(amount=amount, currency=currency)]


def _authorize(state: Payment, command: AuthorizePayment) -> list[DomainEvent]:
    _refuse_unless_awaiting_answer(state, "authorize")
    reference = _required_text("provider_reference", command.provider_reference)
    amount = command.amount
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount != state.amount:
        raise AmountMismatch(
            f"cannot authorize {clipped(str(amount), 60)} for order {state.order_id!r}: "
            f"the requested amount is {state.amount} {state.currency}",
            order_id=state.order_id,
            amount=clipped(str(amount), 60),
            requested=str(state.amount),
        )
    assert state.amount is not None
    return [PaymentAuthorized(amount=state.amount, provider_reference=reference)]


def _refund(state: Payment, command: RefundPayment) -> list[DomainEvent]:
    reason = _required_text("reason", command.reason)
    if state.status is PaymentStatus.REFUNDED:
        raise PaymentAlreadyRefunded(
            f"payment for order {state.order_id!r} is already refunded",
            order_id=state.order_id,
        )
    if state.status is not PaymentStatus.AUTHORIZED:
        raise PaymentNotAuthorized(
            f"cannot refund the payment for order {state.order_id!r}: it is {state.status}, "
            "not authorized",
            order_id=state.order_id,
            status=str(state.status),
        )
    assert state.amount is not None
    return [PaymentRefunded(amount=state.amount, reason=reason)]


def _refuse_unless_awaiting_answer(state: Payment, action: str) -> None:
    """The provider answers once: after a decline nothing is authorized, and vice versa."""
    if state.status is PaymentStatus.DECLINED:
        raise PaymentIsDeclined(
            f"cannot {action} the payment for order {state.order_id!r}: it was declined "
            f"({state.decline_reason}) and stays declined",
            order_id=state.order_id,
            reason=state.decline_reason,
        )
    if state.status in (PaymentStatus.AUTHORIZED, PaymentStatus.REFUNDED):
        raise PaymentAlreadyAuthorized(
            f"cannot {action} the payment for order {state.order_id!r}: it is already "
            f"authorized ({state.provider_reference}, now {state.status})",
            order_id=state.order_id,
            status=str(state.status),
        )


def _valid_amount(amount: Decimal) -> Decimal:
    cents = Decimal(1).scaleb(-AMOUNT_DECIMAL_PLACES)
    try:
        exact = (
            isinstance(amount, Decimal) and amount.is_finite() and amount == amount.quantize(cents)
        )
    except InvalidOperation:  # too many digits to quantize: certainly not a valid amount
        exact = False
    if not exact or not 0 < amount <= MAX_AMOUNT:
        raise InvalidAmount(
            f"amount must be a decimal > 0 and <= {MAX_AMOUNT} with at most "
            f"{AMOUNT_DECIMAL_PLACES} decimal places, got {clipped(repr(amount), 60)}",
            amount=clipped(str(amount), 60),
        )
    return amount.quantize(cents)


def _required_text(name: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidPaymentField(f"{name} must be a non-empty string, got {value!r}", field=name)
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidPaymentField(
            f"{name} must be at most {MAX_TEXT_CHARS} characters, got {len(value)}", field=name
        )
    return value
