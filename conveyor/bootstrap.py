"""The composition root: the one place that turns Settings into wired adapters."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiormq.exceptions import ChannelPreconditionFailed
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

from conveyor.aggregates import AGGREGATES
from conveyor.application.aggregates import AggregateDefinition
from conveyor.application.commands import CommandHandler
from conveyor.embedded_http import HttpAccess
from conveyor.eventstore.port import EventStore
from conveyor.eventstore.serialization import redact_url
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.gateway.relay import EVENTS, GATEWAY_CHECKPOINT, EventGateway
from conveyor.observability.metrics import TimedAppends
from conveyor.readmodels.applier import ProjectionApplier
from conveyor.readmodels.checkpoints import LeasedCheckpoint
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.healing import RECONCILER_CHECKPOINT, GapFiller, ProjectionReconciler
from conveyor.readmodels.port import ReadModelStore
from conveyor.readmodels.progress import ProgressWriter
from conveyor.readmodels.projection_consumer import ProjectionConsumer
from conveyor.readmodels.projections import PROJECTIONS, Projection
from conveyor.settings import Settings, sqlite_location
from conveyor.tls import amqp_security, amqp_ssl_context
from conveyor.workflows.consumer import ProcessManagerConsumer
from conveyor.workflows.facts import INPUT_TYPES
from conveyor.workflows.fulfilment import FulfilmentWorkflows
from conveyor.workflows.sending import WorkflowSender
from conveyor.workflows.states import WorkflowStates
from messaging.cluster import connect_any, failover_broker
from messaging.command_consumer import COMMANDS_EXCHANGE, OUTCOMES_EXCHANGE, CommandConsumer
from messaging.failures import FailureRouter
from messaging.store_outage import Probe, StoreOutage
from messaging.topology import WorkQueue, delay_queue

KURRENTDB_SCHEMES = ("kurrentdb://", "kurrentdb+discover://", "esdb://", "esdb+discover://")
MONGODB_SCHEMES = ("mongodb://", "mongodb+srv://")


def projection_binding(projection: Projection) -> str:
    """What a projection queue binds on `conveyor.events`: `<prefix>#` of the aggregate whose
    definition lists the projection among its read models (Order's: `orders.#`)."""
    feeders = [d for d in AGGREGATES if projection.name in d.read_models]
    if len(feeders) != 1:
        raise ValueError(
            f"projection {projection.name!r} is fed by {len(feeders)} aggregates; one is supported"
        )
    return f"{feeders[0].contract.routing_key_prefix}#"


logger = logging.getLogger("conveyor.topology")


def _sqlite_file(location: str) -> Path:
    # Settings made it one absolute path (sqlite_location); Settings built without
    # validation (model_construct) still get the same treatment.
    return Path(sqlite_location(location))


def describe_event_store(settings: Settings) -> str:
    if settings.event_store.startswith(KURRENTDB_SCHEMES):
        return f"KurrentDB at {redact_url(settings.event_store)}"
    return f"SQLite at {_sqlite_file(settings.event_store)}"


def describe_read_store(settings: Settings) -> str:
    if settings.read_store.startswith(MONGODB_SCHEMES):
        return f"MongoDB at {redact_url(settings.read_store)}"
    return f"SQLite at {_sqlite_file(settings.read_store)}"


async def open_event_store(settings: Settings, *, read_only: bool = False) -> EventStore:
    """`read_only`: for a command that only reads — a missing SQLite file is refused (with
    where it was looked for), never created empty."""
    if settings.event_store.startswith(KURRENTDB_SCHEMES):
        # Imported only when chosen: the gRPC stack costs start-up time for SQLite users.
        from conveyor.eventstore.kurrentdb import KurrentDBEventStore

        kurrent = KurrentDBEventStore(settings.event_store)
        await kurrent.open()
        return kurrent
    return await SqliteEventStore(
        _sqlite_file(settings.event_store),
        busy_timeout=settings.sqlite_busy_timeout,
        read_only=read_only,
        allow_affected_sqlite=settings.sqlite_allow_affected_version,
    ).open()


async def open_read_store(settings: Settings, *, read_only: bool = False) -> ReadModelStore:
    if settings.read_store.startswith(MONGODB_SCHEMES):
        from conveyor.readmodels.mongodb import MongoReadModelStore

        return await MongoReadModelStore(settings.read_store).open()
    from conveyor.readmodels.sqlite import SqliteReadModelStore

    return await SqliteReadModelStore(
        _sqlite_file(settings.read_store),
        busy_timeout=settings.sqlite_busy_timeout,
        read_only=read_only,
        allow_affected_sqlite=settings.sqlite_allow_affected_version,
    ).open()


def command_queue(settings: Settings, aggregate: AggregateDefinition | None = None) -> WorkQueue:
    """An aggregate's command queue with its retry ladder and DLQ (default: the first
    registered aggregate's). `settings.command_queue` (CONVEYOR_COMMAND_QUEUE) names the
    first aggregate's queue, as it always has; every other aggregate's queue is the one
    its definition names."""
    definition = aggregate or AGGREGATES.default
    name = settings.command_queue if definition is AGGREGATES.default else definition.command_queue
    return WorkQueue(
        name,
        settings.retry_delays,
        settings.delivery_limit,
        binding_key=name,
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
    )


def command_queues(settings: Settings) -> list[tuple[AggregateDefinition, WorkQueue]]:
    """One command queue (with its retry ladder and DLQ) per registered aggregate."""
    return [(definition, command_queue(settings, definition)) for definition in AGGREGATES]


def trusted_event_publishers(settings: Settings) -> frozenset[str]:
    """Whose integration events projections apply: the gateway's user, and this process's
    own (its retry and dead-letter copies; that account can reach the queues anyway)."""
    return frozenset({settings.event_publisher or settings.amqp_user(), settings.amqp_user()})


def projection_queue(settings: Settings, projection: Projection) -> WorkQueue:
    return WorkQueue(
        f"{settings.projection_queue_prefix}.{projection.name}",
        settings.retry_delays,
        settings.delivery_limit,
        binding_key=projection_binding(projection),
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
    )


def process_manager_queue(settings: Settings) -> WorkQueue:
    """The process manager's input (bound to `conveyor.events` by every key of
    `process_manager_bindings`), with its retry ladder and DLQ."""
    return WorkQueue(
        settings.process_manager_queue,
        settings.retry_delays,
        settings.delivery_limit,
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
    )


def process_manager_bindings() -> list[str]:
    """The routing keys of the integration events the workflow reacts to, as the registered
    aggregates' contracts name them (an aggregate not registered: none of its keys)."""
    keys = []
    for event_type in INPUT_TYPES:
        definition = AGGREGATES.of_event_type(event_type)
        if definition is not None:
            keys.append(definition.contract.routing_keys[event_type])
    return keys


def fulfilment_timeouts_queue(settings: Settings) -> RabbitQueue:
    return delay_queue(settings.process_manager_queue, "timeouts", settings.fulfilment_timeout)


def commands_by_type(settings: Settings) -> dict[str, str]:
    """Command type → the command queue of the aggregate that takes it."""
    return {
        wire_type: queue.name
        for definition, queue in command_queues(settings)
        for wire_type in definition.commands
    }


async def declare_topology(
    settings: Settings,
    broker: RabbitBroker,
    *,
    commands: bool,
    events: bool,
    workflows: bool = False,
) -> None:
    """Declare the queues, exchanges and bindings this process relies on (idempotent).

    The gateway publishes with mandatory=False (no binding = nobody wants it) and moves its
    checkpoint after the confirms: if the projection queues did not exist yet, the broker
    would confirm and drop the events. So the gateway's process declares them too, not
    only the projection workers'.
    """
    with_dead_letters: list[WorkQueue] = []
    if commands:
        exchange = await broker.declare_exchange(COMMANDS_EXCHANGE)
        for _, work_queue in command_queues(settings):
            with_dead_letters.append(work_queue)
            for queue in (work_queue.work(), *work_queue.retries()):
                declared = await broker.declare_queue(queue)
                if queue.name == work_queue.name:
                    await declared.bind(exchange, routing_key=work_queue.binding_key)
        await broker.declare_exchange(OUTCOMES_EXCHANGE)
    if events:
        exchange = await broker.declare_exchange(EVENTS)
        for projection in PROJECTIONS:
            work_queue = projection_queue(settings, projection)
            with_dead_letters.append(work_queue)
            for queue in (work_queue.work(), *work_queue.retries()):
                declared = await broker.declare_queue(queue)
                if queue.name == work_queue.name:
                    await declared.bind(exchange, routing_key=work_queue.binding_key)
    if events or workflows:
        exchange = await broker.declare_exchange(EVENTS)
        work_queue = process_manager_queue(settings)
        with_dead_letters.append(work_queue)
        for queue in (
            work_queue.work(),
            *work_queue.retries(),
            fulfilment_timeouts_queue(settings),
        ):
            declared = await broker.declare_queue(queue)
            if queue.name == work_queue.name:
                for key in process_manager_bindings():
                    await declared.bind(exchange, routing_key=key)
    await _declare_dead_letter_queues(settings, with_dead_letters)
    # FastStream caches declared queues by name and arguments, not by channel: without this
    # every subscriber would reuse the queue object declared here on the default channel and
    # consume there, with no prefetch limit (unbounded in-flight work, no competition
    # between workers). Forgetting them makes each subscriber declare its queue again on its
    # own channel, with its own prefetch.
    broker.config.declarer.disconnect()


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def http_access(settings: Settings, bound_host: str) -> HttpAccess:
    """A server bound to loopback answers only to loopback names unless told otherwise;
    one bound elsewhere to any name (it is reached under names we cannot guess)."""
    hosts = settings.http_allowed_hosts
    if hosts is None:
        hosts = LOOPBACK_NAMES if bound_host in LOOPBACK_NAMES else ("*",)
    token = settings.http_token.get_secret_value() if settings.http_token else None
    return HttpAccess(allowed_hosts=hosts, token=token)


async def _declare_dead_letter_queues(settings: Settings, work_queues: list[WorkQueue]) -> None:
    """Each .dlq with its byte limit. A DLQ declared by an earlier conveyor, without the
    limit, cannot be redeclared with it (PRECONDITION_FAILED closes the channel — hence a
    connection of our own, a channel per queue): it is kept as it is, with a warning."""
    connection = await connect_any(
        settings.amqp_url,
        ssl_context=amqp_ssl_context(settings),
        timeout=settings.amqp_connect_timeout,
    )
    async with connection:
        for work_queue in work_queues:
            queue = work_queue.dead_letters()
            channel = await connection.channel()
            try:
                await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)
            except ChannelPreconditionFailed:
                logger.warning(
                    "%s was declared without a size limit by an earlier conveyor: kept as it "
                    "is. Limit it with a policy: rabbitmqctl set_policy --apply-to queues "
                    "conveyor-dlq '\\.dlq$' "
                    '\'{"max-length-bytes": %d, "overflow": "reject-publish"}\'',
                    queue.name,
                    work_queue.dead_letter_max_bytes,
                )
            else:
                await channel.close()


def rabbit_broker(settings: Settings, **options: Any) -> RabbitBroker:
    """A FastStream broker for settings.amqp_url: verified TLS for amqps:// (a bad file fails
    here), a bounded connect, and publisher confirms with returns raised, so that a copy
    that cannot be routed fails loudly instead of vanishing."""
    return failover_broker(
        settings.amqp_url,  # several comma-separated hosts: a cluster (messaging/cluster.py)
        timeout=settings.amqp_connect_timeout,
        security=amqp_security(settings),
        default_channel=Channel(publisher_confirms=True, on_return_raises=True),
        **options,
    )


def build_broker(settings: Settings) -> RabbitBroker:
    middlewares = []
    if settings.tracing:  # imported only when on: no OpenTelemetry cost otherwise
        from conveyor.observability.tracing import telemetry_middleware

        middlewares.append(telemetry_middleware())
    return rabbit_broker(
        settings,
        middlewares=middlewares,
        graceful_timeout=settings.shutdown_timeout,
        logger=logging.getLogger("conveyor.broker"),
        log_level=logging.DEBUG,  # per-message lines from FastStream only when debugging
        apply_types=False,  # handlers take the delivery itself (messaging/consumer.py)
    )


def build_store_outage(settings: Settings, name: str, probe: Probe) -> StoreOutage:
    return StoreOutage(
        name,
        probe,
        first_delay=settings.outage_probe_first_delay,
        max_delay=settings.outage_probe_max_delay,
    )


def build_command_consumers(
    settings: Settings,
    broker: RabbitBroker,
    store: EventStore,
    outage: StoreOutage | None = None,
) -> list[CommandConsumer]:
    """One consumer per registered aggregate's command queue, sharing one handler (its
    per-stream locks and conflict retries span every aggregate)."""
    handler = CommandHandler(
        TimedAppends(store), AGGREGATES, conflict_attempts=settings.conflict_attempts
    )
    consumers = []
    for definition, queue in command_queues(settings):
        consumer = CommandConsumer(
            broker,
            queue,
            definition,
            handler,
            failure_router(settings, broker, queue),
            max_message_bytes=settings.max_message_bytes,
            publish_timeout=settings.publish_timeout,
            outage=outage,
        )
        consumer.register(prefetch=settings.prefetch, exchange=COMMANDS_EXCHANGE)
        consumers.append(consumer)
    return consumers


def failure_router(settings: Settings, broker: RabbitBroker, queue: WorkQueue) -> FailureRouter:
    """Where a queue's failed messages go: its retry tiers, then its dead-letter queue."""
    return FailureRouter(
        broker,
        queue,
        max_attempts=settings.max_attempts,
        publish_timeout=settings.publish_timeout,
        user_id=settings.amqp_user(),
        max_body_bytes=settings.max_message_bytes,
    )


def build_projection_consumers(
    settings: Settings,
    broker: RabbitBroker,
    read_store: ReadModelStore,
    collections: ProjectionCollections,
    progress: ProgressWriter | None = None,
    event_store: EventStore | None = None,
    outage: StoreOutage | None = None,
) -> list[ProjectionConsumer]:
    """With `event_store`, a projection fills a gap from the store (readmodels/healing.py)."""
    gaps = GapFiller(event_store) if event_store is not None else None
    consumers = []
    for projection in PROJECTIONS:
        queue = projection_queue(settings, projection)
        consumer = ProjectionConsumer(
            broker,
            queue,
            ProjectionApplier(read_store, collections, projection),
            failure_router(settings, broker, queue),
            progress.tracker(projection.name) if progress is not None else None,
            gaps,
            outage,
            aggregates=AGGREGATES,
            trusted_publishers=trusted_event_publishers(settings),
            max_message_bytes=settings.max_message_bytes,
        )
        consumer.register(prefetch=settings.prefetch, exchange=EVENTS)
        consumers.append(consumer)
    return consumers


def build_process_manager(
    settings: Settings,
    broker: RabbitBroker,
    store: EventStore,
    read_store: ReadModelStore,
    outage: StoreOutage | None = None,
) -> ProcessManagerConsumer:
    """The order-fulfilment process manager on its own queue (conveyor/workflows)."""
    queue = process_manager_queue(settings)
    consumer = ProcessManagerConsumer(
        broker,
        queue,
        FulfilmentWorkflows(
            TimedAppends(store),
            AGGREGATES.named("order"),
            timeout=timedelta(seconds=settings.fulfilment_timeout),
            conflict_attempts=settings.conflict_attempts,
        ),
        WorkflowSender(
            broker,
            COMMANDS_EXCHANGE,
            commands_by_type(settings),
            fulfilment_timeouts_queue(settings).name,
            publish_timeout=settings.publish_timeout,
        ),
        WorkflowStates(read_store),
        failure_router(settings, broker, queue),
        max_message_bytes=settings.max_message_bytes,
        outage=outage,
    )
    consumer.register(prefetch=settings.prefetch)  # bound in declare_topology, by many keys
    return consumer


def build_reconciler(
    settings: Settings,
    store: EventStore,
    read_store: ReadModelStore,
    consumers: list[ProjectionConsumer],
) -> ProjectionReconciler:
    def lease(name: str, owner: str) -> LeasedCheckpoint:
        return LeasedCheckpoint(read_store, name, owner, ttl=settings.gateway_lease_seconds)

    owner = EventGateway.new_owner().replace("gateway", "reconciler")
    return ProjectionReconciler(
        store,
        [consumer.applier for consumer in consumers],
        lease(RECONCILER_CHECKPOINT, owner),
        lease(GATEWAY_CHECKPOINT, owner),  # only read: how far the gateway has confirmed
        settle=settings.reconcile_settle_seconds,
        page_size=settings.gateway_batch_size,
    )


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
        publish_timeout=settings.publish_timeout,
        user_id=settings.amqp_user(),
    )
