"""The composition root: the one place that turns Settings into wired adapters."""

from __future__ import annotations

import logging
from pathlib import Path

from faststream.rabbit import Channel, RabbitBroker

from application.commands import CommandHandler
from conveyor.settings import Settings
from eventstore.port import EventStore
from eventstore.serialization import redact_url
from eventstore.sqlite import SqliteEventStore
from messaging.command_consumer import CommandConsumer
from messaging.failures import FailureRouter
from messaging.topology import WorkQueue

KURRENTDB_SCHEMES = ("kurrentdb://", "kurrentdb+discover://", "esdb://", "esdb+discover://")


def describe_event_store(settings: Settings) -> str:
    if settings.event_store.startswith(KURRENTDB_SCHEMES):
        return f"KurrentDB at {redact_url(settings.event_store)}"
    return f"SQLite at {sqlite_path(settings)}"


def sqlite_path(settings: Settings) -> Path:
    # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy spells them
    return Path(settings.event_store.removeprefix("sqlite:///"))


async def open_event_store(settings: Settings) -> EventStore:
    if settings.event_store.startswith(KURRENTDB_SCHEMES):
        # Imported only when chosen: the gRPC stack costs start-up time for SQLite users.
        from eventstore.kurrentdb import KurrentDBEventStore

        kurrent = KurrentDBEventStore(settings.event_store)
        await kurrent.open()
        return kurrent
    return await SqliteEventStore(
        sqlite_path(settings), busy_timeout=settings.sqlite_busy_timeout
    ).open()


def command_queue(settings: Settings) -> WorkQueue:
    return WorkQueue(settings.command_queue, settings.retry_delays, settings.delivery_limit)


def build_broker(settings: Settings) -> RabbitBroker:
    return RabbitBroker(
        settings.amqp_url,
        graceful_timeout=settings.shutdown_timeout,
        # A retry or dead-letter copy that cannot be routed must fail loudly, never vanish.
        default_channel=Channel(publisher_confirms=True, on_return_raises=True),
        logger=logging.getLogger("conveyor.broker"),
        log_level=logging.DEBUG,  # per-message lines from FastStream only when debugging
    )


def build_command_consumer(
    settings: Settings, broker: RabbitBroker, store: EventStore
) -> CommandConsumer:
    queue = command_queue(settings)
    consumer = CommandConsumer(
        broker,
        queue,
        CommandHandler(store, conflict_attempts=settings.conflict_attempts),
        FailureRouter(broker, queue, max_attempts=settings.max_attempts),
        max_message_bytes=settings.max_message_bytes,
    )
    consumer.register(prefetch=settings.prefetch)
    return consumer
