"""Runs the worker components of one process until asked to stop.

Components, each built by its entrypoint from the composition root: `commands`
(workers/command_worker.py), `gateway` (workers/gateway.py: event store → RabbitMQ relay),
`projections` (workers/projector.py: the read-model consumers and the reconciler), `http`
(the query API). `conveyor run` hosts all of them (the embedded default) or some (`--only`,
one kind per process).

Start: open the stores, connect to RabbitMQ, declare the topology, start consuming.
Stop (SIGINT/SIGTERM): stop consuming, let in-flight messages finish (bounded by
`shutdown_timeout`; whatever is still unacknowledged then goes back to its queue), stop the
gateway after its current page, then close the stores. Reconnection after a broker restart
is aio-pika's robust connection's job: it re-opens channels and consumers by itself.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Iterable
from typing import Any

from aio_pika.abc import AbstractConnection
from faststream.rabbit import RabbitBroker

from conveyor.bootstrap import (
    build_broker,
    declare_topology,
    http_access,
    open_event_store,
    open_read_store,
)
from conveyor.eventstore.notifying import NotifyingEventStore
from conveyor.eventstore.port import EventStore
from conveyor.gateway.relay import EventGateway
from conveyor.observability.health import (
    Readiness,
    ReadinessChecks,
    broker_connection,
    consuming,
    not_paused,
    pings,
)
from conveyor.observability.server import OpsServer
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.healing import ProjectionReconciler
from conveyor.readmodels.port import ReadModelStore
from conveyor.readmodels.progress import ProgressWriter
from conveyor.settings import Settings
from conveyor.workflows.consumer import ProcessManagerConsumer
from messaging.consumer import QueueConsumer
from messaging.store_outage import StoreOutage
from workers import command_worker, gateway, process_manager, projector

logger = logging.getLogger("conveyor.worker")

COMPONENTS = (command_worker.NAME, gateway.NAME, projector.NAME, process_manager.NAME, "http")
STOP_MARGIN = 5.0
"""Seconds stop() may take beyond shutdown_timeout: closing the connection and the stores."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self._at = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._at - time.monotonic())


async def finish_or_cancel(task: asyncio.Future[Any], within: float, what: str) -> bool:
    """Wait up to `within` seconds for `task`; past it cancel it and move on without waiting for
    the cancellation to be honoured (asyncio.wait_for would wait, and a step stuck in a
    library that ignores cancellation would hang the whole stop). True if it finished."""
    done, _ = await asyncio.wait({task}, timeout=within)
    if not done:
        logger.warning("stopping: %s did not finish within %.1f s; cancelled", what, within)
        task.cancel()
        task.add_done_callback(_retrieve_outcome)
        return False
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.warning("stopping: %s failed: %s", what, error)
    return True


def _retrieve_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" noise


class WorkerHost:
    def __init__(self, settings: Settings, components: Iterable[str] = COMPONENTS) -> None:
        self.settings = settings
        self.components = tuple(dict.fromkeys(components))
        unknown = set(self.components) - set(COMPONENTS)
        if unknown or not self.components:
            raise ValueError(
                f"unknown component(s) {', '.join(sorted(unknown)) or '(none given)'}; "
                f"choose from {', '.join(COMPONENTS)}"
            )
        self.store: EventStore | None = None
        self.read_store: ReadModelStore | None = None
        self.broker: RabbitBroker | None = None
        self._connection: AbstractConnection | None = None
        self.collections: ProjectionCollections | None = None
        self.consumers: list[QueueConsumer] = []
        self.outages: list[StoreOutage] = []
        self.gateway: EventGateway | None = None
        self.process_manager: ProcessManagerConsumer | None = None
        self.progress: ProgressWriter | None = None
        self.http_port: int | None = None
        self.ops_port: int | None = None
        self._ops: OpsServer | None = None
        self._checks: ReadinessChecks | None = None
        self._stop = asyncio.Event()
        self._gateway_task: asyncio.Task[None] | None = None
        self.reconciler: ProjectionReconciler | None = None
        self._reconciler_task: asyncio.Task[None] | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._http_server: object | None = None

    def hosts(self, component: str) -> bool:
        return component in self.components

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        self._checks = self._readiness_checks()
        logger.info("conveyor worker started: %s", ", ".join(self.components))

    async def readiness(self) -> Readiness:
        """What /health/ready reports (conveyor/observability/health.py)."""
        if self._stop.is_set():
            return Readiness(False, {"worker": "stopping"})
        if self._checks is None:
            return Readiness(False, {"worker": "starting"})
        return await self._checks.evaluate()

    def _readiness_checks(self) -> ReadinessChecks:
        checks = ReadinessChecks()
        assert self.broker is not None
        checks.add("broker", broker_connection(self.broker))
        for consumer in self.consumers:
            checks.add(f"consumer:{consumer.queue.name}", consuming(consumer.subscriber))
        if self.store is not None:
            checks.add("event_store", pings(self.store.ping))
        if self.read_store is not None:
            checks.add("read_store", pings(self.read_store.ping))
        for outage in self.outages:
            checks.add(f"paused:{outage.name}", not_paused(outage.describe))
        return checks

    async def _start(self) -> None:
        settings = self.settings
        # First, so that a taken port fails before anything else and /health/live answers
        # while the rest starts.
        self._ops = await OpsServer.start(
            settings.ops_host,
            settings.ops_port,
            self.readiness,
            http_access(settings, settings.ops_host),
        )
        self.ops_port = self._ops.port
        logger.info("metrics and health on http://%s:%d/", settings.ops_host, self.ops_port)
        # Projections read the event store to heal what the broker never delivered.
        needs_events = any(
            map(self.hosts, ("commands", "gateway", "http", "projections", process_manager.NAME))
        )
        if needs_events:
            # In one process the gateway is woken by each append instead of polling.
            self.store = NotifyingEventStore(await open_event_store(settings))
        if any(map(self.hosts, ("gateway", "projections", "http", process_manager.NAME))):
            self.read_store = await open_read_store(settings)
            self.collections = ProjectionCollections(self.read_store)
        self.broker = build_broker(settings)
        event_store_outage: StoreOutage | None = None
        if self.hosts(command_worker.NAME):
            assert self.store is not None
            commands = command_worker.build(settings, self.broker, self.store)
            event_store_outage = commands.outage
            self.outages.append(commands.outage)
            self.consumers.extend(commands.consumers)
        if self.hosts(process_manager.NAME):
            assert self.store is not None
            assert self.read_store is not None
            workflows = process_manager.build(
                settings, self.broker, self.store, self.read_store, event_store_outage
            )
            if workflows.outage is not event_store_outage:
                self.outages.append(workflows.outage)
            self.process_manager = workflows.consumer
            self.consumers.append(workflows.consumer)
        if self.hosts(projector.NAME):
            assert self.store is not None
            assert self.read_store is not None
            assert self.collections is not None
            projections = projector.build(
                settings, self.broker, self.store, self.read_store, self.collections
            )
            self.progress = projections.progress
            self.outages.append(projections.outage)
            self.consumers.extend(projections.consumers)
            self.reconciler = projections.reconciler
        if self.hosts(gateway.NAME):
            assert self.store is not None
            assert self.read_store is not None
            self.gateway = gateway.build(settings, self.broker, self.store, self.read_store)
        self._connection = await self.broker.connect()
        await declare_topology(
            settings,
            self.broker,
            # The process manager sends commands: their queues must exist (mandatory).
            commands=self.hosts("commands") or self.hosts(process_manager.NAME),
            events=self.hosts("gateway") or self.hosts("projections"),
            workflows=self.hosts(process_manager.NAME),
        )
        for consumer in self.consumers:
            await consumer.prepare()
        await self.broker.start()
        if self.progress is not None:
            self.progress.start()
        if self.gateway is not None:
            self._gateway_task = asyncio.create_task(self.gateway.run(self._stop), name="gateway")
        if self.reconciler is not None:
            self._reconciler_task = asyncio.create_task(
                self.reconciler.run(self._stop), name="reconciler"
            )
        if self.hosts("http"):
            await self._start_http()

    async def _start_http(self) -> None:
        from conveyor.queries.http import serve

        assert self.store is not None
        assert self.read_store is not None
        assert self.collections is not None
        server, self.http_port, self._http_task = await serve(
            self.settings, self.store, self.read_store, self.collections
        )
        self._http_server = server
        logger.info("query API on http://%s:%d/", self.settings.http_host, self.http_port)

    async def stop(self) -> None:
        """Gateway first (it finishes its page while the broker is up), then the query API,
        then the consumers (in-flight messages finish), and only then the stores they write
        to.

        Bounded as a whole: every step shares one deadline, shutdown_timeout from now, and a
        step still running at the deadline is cancelled without waiting for it to agree.
        Past it, the broker connection is closed outright (unacknowledged messages go back
        to their queues) and the stores are closed; this takes at most STOP_MARGIN more
        seconds, even when the broker no longer answers at all.
        """
        self._stop.set()
        for outage in self.outages:  # no resume behind a stopping broker's back
            await outage.close()
        deadline = Deadline(self.settings.shutdown_timeout)
        hard_deadline = Deadline(self.settings.shutdown_timeout + STOP_MARGIN)
        if self._gateway_task is not None:
            await finish_or_cancel(self._gateway_task, deadline.remaining(), "gateway")
            self._gateway_task = None
        if self._http_task is not None:
            self._http_server.should_exit = True  # type: ignore[union-attr]
            await finish_or_cancel(self._http_task, deadline.remaining(), "query API")
            self._http_task = None
        if self.broker is not None:
            broker, self.broker = self.broker, None
            stopped = await finish_or_cancel(
                asyncio.ensure_future(broker.stop()), deadline.remaining(), "broker"
            )
            if not stopped and self._connection is not None:
                await finish_or_cancel(
                    asyncio.ensure_future(self._connection.close()),
                    hard_deadline.remaining(),
                    "closing the AMQP connection",
                )
            self._connection = None
        if self._reconciler_task is not None:
            await finish_or_cancel(self._reconciler_task, deadline.remaining(), "reconciler")
            self._reconciler_task = None
        if self.progress is not None:  # after the consumers: their last positions count
            await finish_or_cancel(
                asyncio.ensure_future(self.progress.stop()),
                hard_deadline.remaining(),
                "progress writer",
            )
            self.progress = None
        for store in (self.store, self.read_store):
            if store is not None:
                await finish_or_cancel(
                    asyncio.ensure_future(store.close()),
                    hard_deadline.remaining(),
                    "closing a store",
                )
        self.store = None
        self.read_store = None
        if self._ops is not None:  # last: live (and "not ready") until the end
            await self._ops.stop()
            self._ops = None

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        # A signal during start stops the start too: a broker that never answers must not
        # make the worker deaf to SIGTERM.
        starting = asyncio.ensure_future(self.start())
        signalled = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                starting.cancel()
                logger.info("stopping while starting")
            await starting  # raises what start raised, CancelledError included
            await signalled
            logger.info("stopping: finishing in-flight messages")
        finally:
            signalled.cancel()
            await self.stop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        logger.info("conveyor worker stopped")
