"""The Order aggregate's rule violations. Each names its rule (a stable code) and the values."""

from __future__ import annotations

from domain.rules import MAX_DETAIL_CHARS, MAX_REASON_CHARS, RuleViolation, clipped

__all__ = ["MAX_DETAIL_CHARS", "MAX_REASON_CHARS", "OrderRuleViolation", "clipped"]


class OrderRuleViolation(RuleViolation):
    """A command was refused by one of the Order aggregate's rules."""

    rule: str = "order_rule"


class OrderAlreadyExists(OrderRuleViolation):
    rule = "order_already_exists"


class OrderNotFound(OrderRuleViolation):
    rule = "order_not_found"


class OrderNotPending(OrderRuleViolation):
    rule = "order_not_pending"


class OrderAlreadyConfirmed(OrderRuleViolation):
    rule = "order_already_confirmed"


class OrderIsCancelled(OrderRuleViolation):
    rule = "order_cancelled"


class OrderIsFulfilled(OrderRuleViolation):
    """A fulfilled order is final: its stock is committed and its payment taken."""

    rule = "order_fulfilled"


class OrderNotConfirmed(OrderRuleViolation):
    """Only a confirmed order can be fulfilled."""

    rule = "order_not_confirmed"


class InvalidQuantity(OrderRuleViolation):
    rule = "invalid_quantity"


class QuantityLimitExceeded(OrderRuleViolation):
    rule = "quantity_limit_exceeded"


class LineLimitExceeded(OrderRuleViolation):
    """An order holds at most MAX_LINES_PER_ORDER distinct SKUs (bounds its size)."""

    rule = "line_limit_exceeded"


class InvalidUnitPrice(OrderRuleViolation):
    rule = "invalid_unit_price"


class UnitPriceMismatch(OrderRuleViolation):
    rule = "unit_price_mismatch"


class CurrencyMismatch(OrderRuleViolation):
    rule = "currency_mismatch"


class InvalidCurrency(OrderRuleViolation):
    rule = "invalid_currency"


class ItemNotInOrder(OrderRuleViolation):
    rule = "item_not_in_order"


class EmptyOrder(OrderRuleViolation):
    rule = "empty_order"


class InvalidField(OrderRuleViolation):
    rule = "invalid_field"
