"""What every aggregate's rule violations share: a stable rule code, a bounded message."""

from __future__ import annotations

from typing import Any

MAX_REASON_CHARS = 500
"""A reason is stored, logged and published with every rejection: it quotes the values that
broke the rule, so a 200,000-digit price must not make a 200 KB reason."""
MAX_DETAIL_CHARS = 100


def clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RuleViolation(Exception):
    """A command was refused by a business rule: a normal outcome, never retried.

    Each aggregate subclasses it once, and each of its rules once more with a stable `rule`
    code: the code is what outcomes, rejection records and dashboards carry.
    """

    rule: str = "rule_violation"

    def __init__(self, message: str, **details: Any) -> None:
        message = clipped(message, MAX_REASON_CHARS)
        super().__init__(message)
        self.message = message
        self.details = {
            name: clipped(value, MAX_DETAIL_CHARS) if isinstance(value, str) else value
            for name, value in details.items()
        }
