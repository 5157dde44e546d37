"""The composition root: the one place that turns Settings into wired adapters."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from faststream.rabbit import Channel, RabbitBroker

from application.commands import CommandHandler
from conveyor.settings import Settings
from conveyor.tls import amqp_security
from eventstore.port import EventStore
from eventstore.serialization import redact_url
from eventstore.sqlite import SqliteEventStore
from gateway.relay import EVENTS, GATEWAY_CHECKPOINT, EventGateway
from messaging.cluster import rabbit_broker
from messaging.command_consumer import OUTCOMES_EXCHANGE, CommandConsumer
from messaging.failures import FailureRouter
from messaging.projection_consumer import ProjectionConsumer
from messaging.topology import WorkQueue
from observability.metrics import TimedAppends
from readmodels.applier import ProjectionApplier
from readmodels.checkpoints import LeasedCheckpoint
from readmodels.collections import ProjectionCollections
from readmodels.port import ReadModelStore
from readmodels.progress import ProgressWriter
from readmodels.projections import PROJECTIONS, Projection

KURRENTDB_SCHEMES = ("kurrentdb://", "kurrentdb+discover://", "esdb://", "esdb+discover://")
MONGODB_SCHEMES = ("mongodb://", "mongodb+srv://")
PROJECTION_BINDING = "orders.#"


def _sqlite_file(location: str) -> Path:
    # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy spells them
    return Path(location.removeprefix("sqlite:///"))


def describe_event_store(settings: Settings) -> str:
    if settings.event_store.startswith(KURRENTDB_SCHEMES):
        return f"KurrentDB at {redact_url(settings.event_store)}"
    return f"SQLite at {_sqlite_file(settings.event_store)}"


def describe_read_store(settings: Settings) -> str:
    if settings.read_store.startswith(MONGODB_SCHEMES):
        return f"MongoDB at {redact_url(settings.read_store)}"
    return f"SQLite at {_sqlite_file(settings.read_store)}"


async def open_event_store(settings: Settings) -> EventStore:
    if settings.event_store.startswith(KURRENTDB_SCHEMES):
        # Imported only when chosen: the gRPC stack costs start-up time for SQLite users.
        from eventstore.kurrentdb import KurrentDBEventStore

        kurrent = KurrentDBEventStore(settings.event_store)
        await kurrent.open()
        return kurrent
    return await SqliteEventStore(
        _sqlite_file(settings.event_store), busy_timeout=settings.sqlite_busy_timeout
    ).open()


async def open_read_store(settings: Settings) -> ReadModelStore:
    if settings.read_store.startswith(MONGODB_SCHEMES):
        from readmodels.mongodb import MongoReadModelStore

        return await MongoReadModelStore(settings.read_store).open()
    from readmodels.sqlite import SqliteReadModelStore

    return await SqliteReadModelStore(
        _sqlite_file(settings.read_store), busy_timeout=settings.sqlite_busy_timeout
    ).open()


def command_queue(settings: Settings) -> WorkQueue:
    return WorkQueue(settings.command_queue, settings.retry_delays, settings.delivery_limit)


def projection_queue(settings: Settings, projection: Projection) -> WorkQueue:
    return WorkQueue(
        f"{settings.projection_queue_prefix}.{projection.name}",
        settings.retry_delays,
        settings.delivery_limit,
        binding_key=PROJECTION_BINDING,
    )


async def declare_topology(
    settings: Settings, broker: RabbitBroker, *, commands: bool, events: bool
) -> None:
    """Declare the queues, exchanges and bindings this process relies on (idempotent).

    The gateway publishes with mandatory=False (no binding = nobody wants it) and moves its
    checkpoint after the confirms: if the projection queues did not exist yet, the broker
    would confirm and drop the events. So the gateway's process declares them too, not
    only the projection workers'.
    """
    if commands:
        for queue in command_queue(settings).all_queues():
            await broker.declare_queue(queue)
        await broker.declare_exchange(OUTCOMES_EXCHANGE)
    if events:
        exchange = await broker.declare_exchange(EVENTS)
        for projection in PROJECTIONS:
            work_queue = projection_queue(settings, projection)
            for queue in work_queue.all_queues():
                declared = await broker.declare_queue(queue)
                if queue.name == work_queue.name:
                    await declared.bind(exchange, routing_key=work_queue.binding_key)
    # FastStream caches declared queues by name and arguments, not by channel: without this
    # every subscriber would reuse the queue object declared here on the default channel and
    # consume there, with no prefetch limit (unbounded in-flight work, no competition
    # between workers). Forgetting them makes each subscriber declare its queue again on its
    # own channel, with its own prefetch.
    broker.config.declarer.disconnect()


def build_broker(settings: Settings) -> RabbitBroker:
    middlewares = []
    if settings.tracing:  # imported only when on: no OpenTelemetry cost otherwise
        from observability.tracing import telemetry_middleware

        middlewares.append(telemetry_middleware())
    return rabbit_broker(
        settings.amqp_url,  # several comma-separated hosts: a cluster (messaging/cluster.py)
        # amqps:// → verified TLS with the amqp_*_file settings (a bad file fails here)
        security=amqp_security(settings),
        middlewares=middlewares,
        graceful_timeout=settings.shutdown_timeout,
        # A retry or dead-letter copy that cannot be routed must fail loudly, never vanish.
        default_channel=Channel(publisher_confirms=True, on_return_raises=True),
        logger=logging.getLogger("conveyor.broker"),
        log_level=logging.DEBUG,  # per-message lines from FastStream only when debugging
        apply_types=False,  # handlers take the delivery itself (messaging/consumer.py)
    )


def build_command_consumer(
    settings: Settings, broker: RabbitBroker, store: EventStore
) -> CommandConsumer:
    queue = command_queue(settings)
    consumer = CommandConsumer(
        broker,
        queue,
        CommandHandler(TimedAppends(store), conflict_attempts=settings.conflict_attempts),
        FailureRouter(broker, queue, max_attempts=settings.max_attempts),
        max_message_bytes=settings.max_message_bytes,
    )
    consumer.register(prefetch=settings.prefetch)
    return consumer


def build_projection_consumers(
    settings: Settings,
    broker: RabbitBroker,
    read_store: ReadModelStore,
    collections: ProjectionCollections,
    progress: ProgressWriter | None = None,
) -> list[ProjectionConsumer]:
    consumers = []
    for projection in PROJECTIONS:
        queue = projection_queue(settings, projection)
        consumer = ProjectionConsumer(
            broker,
            queue,
            ProjectionApplier(read_store, collections, projection),
            FailureRouter(broker, queue, max_attempts=settings.max_attempts),
            progress.tracker(projection.name) if progress is not None else None,
        )
        consumer.register(prefetch=settings.prefetch, exchange=EVENTS)
        consumers.append(consumer)
    return consumers


def build_gateway(
    settings: Settings,
    broker: RabbitBroker,
    store: EventStore,
    read_store: ReadModelStore,
    *,
    wait_for_append: Callable[[float], Awaitable[None]] | None = None,
) -> EventGateway:
    checkpoint = LeasedCheckpoint(
        read_store,
        GATEWAY_CHECKPOINT,
        EventGateway.new_owner(),
        ttl=settings.gateway_lease_seconds,
    )
    return EventGateway(
        store,
        broker,
        checkpoint,
        batch_size=settings.gateway_batch_size,
        idle_poll=settings.gateway_poll_interval,
        wait_for_append=wait_for_append,
    )
