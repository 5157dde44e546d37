"""The process manager: the order-fulfilment workflow (domain/fulfilment), fed by the
integration events it reacts to and by its own durable timeouts, on its queue
`fulfilment.events`; it sends commands to the aggregates' command queues.

Run it alone with `conveyor run --only process-manager`; workers/host.py runs it (start,
drain, stop) beside whatever else the process hosts. Its parts are wired in
conveyor/bootstrap.py, its use case is conveyor/workflows/.
"""

from __future__ import annotations

from dataclasses import dataclass

from faststream.rabbit import RabbitBroker

from conveyor.bootstrap import build_process_manager, build_store_outage
from conveyor.eventstore.port import EventStore
from conveyor.readmodels.port import ReadModelStore
from conveyor.settings import Settings
from conveyor.workflows.consumer import ProcessManagerConsumer
from messaging.store_outage import StoreOutage

NAME = "process-manager"


@dataclass(frozen=True)
class ProcessManager:
    consumer: ProcessManagerConsumer
    outage: StoreOutage
    """Pauses consuming while the event store (its workflows' streams) is away."""


def build(
    settings: Settings,
    broker: RabbitBroker,
    event_store: EventStore,
    read_store: ReadModelStore,
    outage: StoreOutage | None = None,
) -> ProcessManager:
    """`outage`: the event store's, when the process hosts its command workers too (one
    outage pauses every consumer of the store)."""
    outage = outage or build_store_outage(settings, "event_store", event_store.ping)
    return ProcessManager(
        build_process_manager(settings, broker, event_store, read_store, outage), outage
    )
