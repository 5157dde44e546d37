"""The Payment aggregate's rule violations. Each names its rule (a stable code) and values."""

from __future__ import annotations

from domain.rules import RuleViolation


class PaymentRuleViolation(RuleViolation):
    """A command was refused by one of the Payment aggregate's rules."""

    rule: str = "payment_rule"


class PaymentAlreadyRequested(PaymentRuleViolation):
    rule = "payment_already_requested"


class PaymentNotRequested(PaymentRuleViolation):
    rule = "payment_not_requested"


class AmountMismatch(PaymentRuleViolation):
    """Only the requested amount can be authorized."""

    rule = "amount_mismatch"


class PaymentAlreadyAuthorized(PaymentRuleViolation):
    rule = "payment_already_authorized"


class PaymentIsDeclined(PaymentRuleViolation):
    """A declined payment stays declined."""

    rule = "payment_declined"


class PaymentNotAuthorized(PaymentRuleViolation):
    rule = "payment_not_authorized"


class PaymentAlreadyRefunded(PaymentRuleViolation):
    rule = "payment_already_refunded"


class InvalidAmount(PaymentRuleViolation):
    rule = "invalid_amount"


class InvalidPaymentField(PaymentRuleViolation):
    rule = "invalid_payment_field"
