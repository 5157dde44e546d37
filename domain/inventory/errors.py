"""The Inventory aggregate's rule violations. Each names its rule (a stable code) and values."""

from __future__ import annotations

from domain.rules import RuleViolation


class InventoryRuleViolation(RuleViolation):
    """A command was refused by one of the Inventory aggregate's rules."""

    rule: str = "inventory_rule"


class InvalidStockQuantity(InventoryRuleViolation):
    rule = "invalid_stock_quantity"


class StockLimitExceeded(InventoryRuleViolation):
    """On hand is bounded, so no sum of quantities ever leaves exact integer territory."""

    rule = "stock_limit_exceeded"


class ReservationAlreadyExists(InventoryRuleViolation):
    rule = "reservation_already_exists"


class ReservationNotFound(InventoryRuleViolation):
    rule = "reservation_not_found"


class InvalidInventoryField(InventoryRuleViolation):
    rule = "invalid_inventory_field"
