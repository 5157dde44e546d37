"""Business rule violations. Each names its rule (a stable code) and the values involved."""

from __future__ import annotations

from typing import Any

MAX_REASON_CHARS = 500
"""A reason is stored, logged and published with every rejection: it quotes the values that
broke the rule, so a 200,000-digit price must not make a 200 KB reason."""
MAX_DETAIL_CHARS = 100


def clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class OrderRuleViolation(Exception):
    """A command was refused by a business rule: a normal outcome, never retried."""

    rule: str = "order_rule"

    def __init__(self, message: str, **details: Any) -> None:
        message = clipped(message, MAX_REASON_CHARS)
        super().__init__(message)
        self.message = message
        self.details = {
            name: clipped(value, MAX_DETAIL_CHARS) if isinstance(value, str) else value
            for name, value in details.items()
        }


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


class ItemNotInOrder(OrderRuleViolation):
    rule = "item_not_in_order"


class EmptyOrder(OrderRuleViolation):
    rule = "empty_order"


class InvalidField(OrderRuleViolation):
    rule = "invalid_field"
