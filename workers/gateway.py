"""The gateway: follows the event store's global log from its checkpoint and publishes each
event with an integration contract to `conveyor.events`, with publisher confirms.

Run it alone with `conveyor run --only gateway` (a standby takes over when the lease
holder stops); workers/host.py runs it (start, finish the page, stop) beside whatever else
the process hosts. Its parts are wired in conveyor/bootstrap.py.
"""

from __future__ import annotations

from faststream.rabbit import RabbitBroker

from conveyor.bootstrap import build_gateway
from conveyor.eventstore.notifying import NotifyingEventStore
from conveyor.eventstore.port import EventStore
from conveyor.gateway.relay import EventGateway
from conveyor.readmodels.port import ReadModelStore
from conveyor.settings import Settings

NAME = "gateway"


def build(
    settings: Settings, broker: RabbitBroker, event_store: EventStore, read_store: ReadModelStore
) -> EventGateway:
    # In one process with the command worker, each append wakes the gateway instead of a poll.
    notifying = event_store if isinstance(event_store, NotifyingEventStore) else None
    return build_gateway(
        settings,
        broker,
        event_store,
        read_store,
        wait_for_append=notifying.wait_for_append if notifying else None,
    )
