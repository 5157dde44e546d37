"""A tiny aggregate that exists only in the tests: a counter that can be opened and bumped.

Everything an aggregate needs, in one file (a real one spreads these over domain/<name>/,
messaging/contracts/<name>.py and conveyor/aggregates/<name>.py): it proves the shared
machinery knows no aggregate (tests/integration/test_toy_aggregate.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from conveyor.application.aggregates import AggregateDefinition, IntegrationContract
from domain.codec import EventCodec
from domain.rules import RuleViolation
from messaging.contracts.wire import AggregateEvent, CommandMessage, EventData, Identifier

# --- domain (pure) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Open:
    counter_id: str


@dataclass(frozen=True, slots=True)
class Bump:
    counter_id: str
    by: int


@dataclass(frozen=True, slots=True)
class Opened:
    pass


@dataclass(frozen=True, slots=True)
class Bumped:
    by: int


class CounterRuleViolation(RuleViolation):
    rule = "counter_rule"


class CounterNotOpen(CounterRuleViolation):
    rule = "counter_not_open"


@dataclass(frozen=True, slots=True)
class Counter:
    counter_id: str
    version: int = 0
    is_open: bool = False
    total: int = 0

    def apply(self, event: Opened | Bumped) -> Counter:
        if isinstance(event, Opened):
            return replace(self, version=self.version + 1, is_open=True)
        return replace(self, version=self.version + 1, total=self.total + event.by)


def decide(state: Counter, command: Open | Bump) -> list[Opened | Bumped]:
    if isinstance(command, Open):
        return [] if state.is_open else [Opened()]
    if not state.is_open:
        raise CounterNotOpen(f"counter {state.counter_id!r} is not open")
    return [Bumped(command.by)]


# --- wire contract ---------------------------------------------------------------------


class _CounterCommand(CommandMessage):
    counter_id: Identifier


class OpenMessage(_CounterCommand):
    type: Literal["Open"]

    def to_command(self) -> Open:
        return Open(self.counter_id)


class BumpMessage(_CounterCommand):
    type: Literal["Bump"]
    by: int

    def to_command(self) -> Bump:
        return Bump(self.counter_id, self.by)


ROUTING_KEYS = {"Opened": "counters.opened", "Bumped": "counters.bumped"}


class _CounterEvent(AggregateEvent):
    routing_keys = ROUTING_KEYS


class OpenedData(EventData):
    pass


class BumpedData(EventData):
    by: int


class OpenedEvent(_CounterEvent):
    type: Literal["Opened"]
    data: OpenedData


class BumpedEvent(_CounterEvent):
    type: Literal["Bumped"]
    data: BumpedData


# --- the definition --------------------------------------------------------------------

COUNTERS = AggregateDefinition(
    name="counter",
    stream_prefix="counter-",
    command_queue="counters.commands",
    id_field="counter_id",
    commands={"Open": OpenMessage, "Bump": BumpMessage},
    codec=EventCodec((Opened, Bumped)),
    initial_state=Counter,
    evolve=Counter.apply,
    decide=decide,
    rule_violation=CounterRuleViolation,
    contract=IntegrationContract(
        routing_keys=ROUTING_KEYS,
        routing_key_prefix="counters.",
        events={"Opened": OpenedEvent, "Bumped": BumpedEvent},
    ),
)
