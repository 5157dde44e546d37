"""Given-when-then tests of the Payment aggregate's rules (pure domain, no I/O)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

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
    PaymentRuleViolation,
)
from domain.payments.events import (
    CODEC,
    DomainEvent,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentRefunded,
    PaymentRequested,
)
from domain.payments.payment import PaymentStatus, decide, rebuild
from tests.unit.domain_scenarios import Rules

ORDER = "order-1"
D = Decimal


given = Rules(rebuild, decide, PaymentRuleViolation, ORDER).given


def request(amount: Any = "19.98", currency: str = "EUR") -> RequestPayment:
    return RequestPayment(ORDER, D(amount) if isinstance(amount, str) else amount, currency)


def authorize(amount: str = "19.98", reference: str = "psp-1") -> AuthorizePayment:
    return AuthorizePayment(ORDER, D(amount), reference)


def decline(reason: str = "card expired") -> DeclinePayment:
    return DeclinePayment(ORDER, reason)


def refund(reason: str = "order cancelled") -> RefundPayment:
    return RefundPayment(ORDER, reason)


REQUESTED = (PaymentRequested(D("19.98"), "EUR"),)
AUTHORIZED = (*REQUESTED, PaymentAuthorized(D("19.98"), "psp-1"))
DECLINED = (*REQUESTED, PaymentDeclined("card expired"))
REFUNDED = (*AUTHORIZED, PaymentRefunded(D("19.98"), "order cancelled"))


# --------------------------------------------------------------------------- request


def test_a_payment_is_requested_with_the_order_total() -> None:
    given().when(request()).then(PaymentRequested(D("19.98"), "EUR"))
    given().when(request("5", "USD")).then(PaymentRequested(D("5.00"), "USD"))
    state = rebuild(ORDER, REQUESTED)
    assert (state.status, state.amount, state.currency, state.version) == (
        PaymentStatus.REQUESTED,
        D("19.98"),
        "EUR",
        1,
    )


def test_the_default_currency_is_eur() -> None:
    assert RequestPayment(ORDER, D("1.00")).currency == "EUR"


@pytest.mark.parametrize("history", [REQUESTED, AUTHORIZED, DECLINED, REFUNDED], ids=repr)
def test_a_payment_is_requested_only_once(history: tuple[DomainEvent, ...]) -> None:
    error = given(*history).when(request()).then_rejected(PaymentAlreadyRequested, repr(ORDER))
    assert error.rule == "payment_already_requested"


@pytest.mark.parametrize(
    "amount", [D("0"), D("-1.00"), D("0.001"), D("NaN"), D("Infinity"), D("1e12"), 5], ids=repr
)
def test_the_amount_is_a_positive_bounded_decimal_in_cents(amount: Any) -> None:
    error = given().when(request(amount)).then_rejected(InvalidAmount, "amount must be")
    assert error.rule == "invalid_amount"


@pytest.mark.parametrize("currency", ["", "eur", "EURO", "E1R"])
def test_the_currency_is_an_iso_code(currency: str) -> None:
    given().when(request(currency=currency)).then_rejected(InvalidPaymentField, "currency")


@pytest.mark.parametrize(
    "command", [authorize(), decline(), refund()], ids=["authorize", "decline", "refund"]
)
def test_nothing_happens_to_a_payment_never_requested(command: Command) -> None:
    error = given().when(command).then_rejected(PaymentNotRequested, repr(ORDER))
    assert error.rule == "payment_not_requested"


# --------------------------------------------------------------------------- provider answers


def test_the_requested_amount_is_authorized() -> None:
    given(*REQUESTED).when(authorize()).then(PaymentAuthorized(D("19.98"), "psp-1"))
    given(*REQUESTED).when(authorize("19.980")).then(PaymentAuthorized(D("19.98"), "psp-1"))
    state = rebuild(ORDER, AUTHORIZED)
    assert (state.status, state.provider_reference) == (PaymentStatus.AUTHORIZED, "psp-1")


@pytest.mark.parametrize("amount", ["19.97", "19.99", "0.01", "1998"])
def test_only_the_requested_amount_can_be_authorized(amount: str) -> None:
    error = (
        given(*REQUESTED)
        .when(authorize(amount))
        .then_rejected(AmountMismatch, amount, "requested amount is 19.98 EUR")
    )
    assert error.rule == "amount_mismatch"
    assert error.details == {"order_id": ORDER, "amount": amount, "requested": "19.98"}


@pytest.mark.parametrize("history", [AUTHORIZED, REFUNDED], ids=["authorized", "refunded"])
@pytest.mark.parametrize("command", [authorize(), decline()], ids=["authorize", "decline"])
def test_nothing_is_authorized_twice_nor_declined_after_authorization(
    history: tuple[DomainEvent, ...], command: Command
) -> None:
    error = given(*history).when(command).then_rejected(PaymentAlreadyAuthorized, "already")
    assert error.rule == "payment_already_authorized"


@pytest.mark.parametrize("command", [authorize(), decline("again")], ids=["authorize", "decline"])
def test_a_declined_payment_stays_declined(command: Command) -> None:
    error = (
        given(*DECLINED)
        .when(command)
        .then_rejected(PaymentIsDeclined, "declined (card expired)", "stays declined")
    )
    assert error.rule == "payment_declined"
    assert rebuild(ORDER, DECLINED).decline_reason == "card expired"


def test_a_decline_names_its_reason() -> None:
    given(*REQUESTED).when(decline("insufficient funds")).then(
        PaymentDeclined("insufficient funds")
    )
    given(*REQUESTED).when(decline(" ")).then_rejected(InvalidPaymentField, "reason")


def test_the_provider_reference_is_required() -> None:
    given(*REQUESTED).when(authorize(reference="")).then_rejected(
        InvalidPaymentField, "provider_reference"
    )


# --------------------------------------------------------------------------- refund


def test_an_authorized_payment_is_refunded_in_full() -> None:
    given(*AUTHORIZED).when(refund()).then(PaymentRefunded(D("19.98"), "order cancelled"))
    assert rebuild(ORDER, REFUNDED).status is PaymentStatus.REFUNDED


@pytest.mark.parametrize("history", [REQUESTED, DECLINED], ids=["requested", "declined"])
def test_only_an_authorized_payment_is_refunded(history: tuple[DomainEvent, ...]) -> None:
    error = given(*history).when(refund()).then_rejected(PaymentNotAuthorized, "not authorized")
    assert error.rule == "payment_not_authorized"


def test_a_payment_is_refunded_once() -> None:
    error = given(*REFUNDED).when(refund()).then_rejected(PaymentAlreadyRefunded, repr(ORDER))
    assert error.rule == "payment_already_refunded"


# --------------------------------------------------------------------------- codec, codes


@pytest.mark.parametrize("event", [*REFUNDED, PaymentDeclined("card expired")], ids=repr)
def test_events_round_trip_through_their_stored_form(event: DomainEvent) -> None:
    name = type(event).__name__
    stored = json.loads(json.dumps(CODEC.to_data(event)))
    back = CODEC.from_data(name, CODEC.schema_version_of(event), stored)
    assert back == event
    assert repr(back) == repr(event)


def test_rule_codes_are_unique() -> None:
    classes = PaymentRuleViolation.__subclasses__()
    assert len(classes) == 9
    assert len({cls.rule for cls in classes} | {PaymentRuleViolation.rule}) == 10
