"""Given-when-then for any aggregate's pure rules: `Rules(rebuild, decide, violation, id)`,
then `rules.given(*history).when(command).then(*events)` or `.then_rejected(Rule, ...)`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from domain.rules import RuleViolation


@dataclass(frozen=True)
class Outcome:
    command: Any
    events: list[Any] | None
    error: RuleViolation | None

    def then(self, *expected: Any) -> None:
        assert self.error is None, f"{self.command!r} was rejected: {self.error}"
        assert self.events == list(expected)

    def then_rejected(self, error_class: type[RuleViolation], *parts: str) -> Any:
        assert self.error is not None, f"{self.command!r} was accepted with {self.events!r}"
        assert type(self.error) is error_class, f"got {type(self.error).__name__}: {self.error}"
        for part in parts:
            assert part in self.error.message, f"{part!r} not in {self.error.message!r}"
        assert self.error.rule == error_class.rule
        return self.error


@dataclass(frozen=True)
class Scenario:
    rules: Rules
    history: tuple[Any, ...]

    def when(self, command: Any) -> Outcome:
        state = self.rules.rebuild(self.rules.aggregate_id, self.history)
        try:
            produced = self.rules.decide(state, command)
        except self.rules.violation as error:
            return Outcome(command, None, error)
        # Deciding never changes the state it was given.
        assert state == self.rules.rebuild(self.rules.aggregate_id, self.history)
        return Outcome(command, produced, None)


@dataclass(frozen=True)
class Rules:
    rebuild: Callable[[str, Iterable[Any]], Any]
    decide: Callable[[Any, Any], list[Any]]
    violation: type[RuleViolation]
    aggregate_id: str

    def given(self, *history: Any) -> Scenario:
        return Scenario(self, tuple(history))
