"""The command worker: commands from every registered aggregate's command queue
(`orders.commands`, …; conveyor/aggregates), decided by the command handler, their events
appended to the event store, their outcomes published.

Run it alone with `conveyor run --only commands`; workers/host.py runs it (start, drain,
stop) beside whatever else the process hosts. Its parts are wired in conveyor/bootstrap.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from faststream.rabbit import RabbitBroker

from conveyor.bootstrap import build_command_consumers, build_store_outage
from conveyor.eventstore.port import EventStore
from conveyor.settings import Settings
from messaging.command_consumer import CommandConsumer
from messaging.store_outage import StoreOutage

NAME = "commands"


@dataclass(frozen=True)
class CommandWorker:
    consumers: list[CommandConsumer]
    """One per registered aggregate's command queue."""
    outage: StoreOutage
    """Pauses consuming while the event store is away."""


def build(settings: Settings, broker: RabbitBroker, event_store: EventStore) -> CommandWorker:
    outage = build_store_outage(settings, "event_store", event_store.ping)
    return CommandWorker(build_command_consumers(settings, broker, event_store, outage), outage)
