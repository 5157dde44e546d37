"""The projector: integration events from the projection queues, one consumer per read
model, applied to the read-model store; the reconciler repairs what the broker never
delivered, from the event store.

Run it alone with `conveyor run --only projections`; workers/host.py runs it (start, drain,
stop) beside whatever else the process hosts. Its parts are wired in conveyor/bootstrap.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from faststream.rabbit import RabbitBroker

from conveyor.bootstrap import (
    build_projection_consumers,
    build_reconciler,
    build_store_outage,
)
from conveyor.eventstore.port import EventStore
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.healing import ProjectionReconciler
from conveyor.readmodels.port import ReadModelStore
from conveyor.readmodels.progress import ProgressWriter
from conveyor.readmodels.projection_consumer import ProjectionConsumer
from conveyor.settings import Settings
from messaging.store_outage import StoreOutage

NAME = "projections"


@dataclass(frozen=True)
class Projector:
    consumers: list[ProjectionConsumer]
    outage: StoreOutage
    """Pauses consuming while the read-model store is away."""
    progress: ProgressWriter
    reconciler: ProjectionReconciler


def build(
    settings: Settings,
    broker: RabbitBroker,
    event_store: EventStore,
    read_store: ReadModelStore,
    collections: ProjectionCollections,
) -> Projector:
    progress = ProgressWriter(read_store)
    outage = build_store_outage(settings, "read_store", read_store.ping)
    consumers = build_projection_consumers(
        settings,
        broker,
        read_store,
        collections,
        progress,
        event_store=event_store,
        outage=outage,
    )
    reconciler = build_reconciler(settings, event_store, read_store, consumers)
    return Projector(consumers, outage, progress, reconciler)
