"""Runs the worker components of one process until asked to stop.

Start: open the event store, connect to RabbitMQ, declare the topology, start consuming.
Stop (SIGINT/SIGTERM): stop consuming, let in-flight messages finish (bounded by
`shutdown_timeout`; whatever is still unacknowledged then goes back to its queue), then
close the store. Reconnection after a broker restart is aio-pika's robust connection's job:
it re-opens channels and re-declares queues and consumers by itself.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable
from contextlib import suppress

from faststream.rabbit import RabbitBroker

from conveyor.bootstrap import build_broker, build_command_consumer, open_event_store
from conveyor.settings import Settings
from eventstore.port import EventStore

logger = logging.getLogger("conveyor.worker")

COMPONENTS = ("commands",)


class WorkerHost:
    def __init__(self, settings: Settings, components: Iterable[str] = COMPONENTS) -> None:
        self.settings = settings
        self.components = tuple(components)
        unknown = set(self.components) - set(COMPONENTS)
        if unknown:
            raise ValueError(
                f"unknown component(s) {', '.join(sorted(unknown))}; "
                f"choose from {', '.join(COMPONENTS)}"
            )
        self.store: EventStore | None = None
        self.broker: RabbitBroker | None = None

    async def start(self) -> None:
        self.store = await open_event_store(self.settings)
        try:
            self.broker = build_broker(self.settings)
            consumer = build_command_consumer(self.settings, self.broker, self.store)
            await self.broker.connect()
            await consumer.declare()
            await self.broker.start()
        except BaseException:
            await self.stop()
            raise
        logger.info("conveyor worker started: %s", ", ".join(self.components))

    async def stop(self) -> None:
        if self.broker is not None:
            with suppress(Exception):
                await self.broker.stop()
            self.broker = None
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await self.start()
        try:
            await stop.wait()
            logger.info("stopping: finishing in-flight messages")
        finally:
            await self.stop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        logger.info("conveyor worker stopped")
