"""The figures: each measures conveyor and its reference in the same run, `repeat` times.

Every figure function takes the run's `BenchContext` and returns a `Figure` with one value
and one reference sample per repetition (conveyor and reference alternate, so slow
phases of a shared machine hit both alike) plus details worth keeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import psutil

from bench import reference_eventsourcing
from bench.reference_broker import Requester, pipelined_publish
from bench.workload import (
    COMMANDS_PER_ORDER,
    ITEMS,
    command_bodies,
    customer_of,
    domain_commands,
    envelope,
    order_ids,
)
from conveyor.aggregates import AGGREGATES
from conveyor.application.commands import CommandHandler
from conveyor.bootstrap import build_broker, build_gateway, declare_topology, projection_queue
from conveyor.demo import OrderScript, caught_up, percentile, run_demo
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.port import ReadModelStore
from conveyor.readmodels.projections import ORDER_PROJECTIONS
from conveyor.readmodels.rebuild import rebuild_all as rebuild_projections
from conveyor.readmodels.sqlite import SqliteReadModelStore
from conveyor.settings import Settings
from messaging.customers import IntegrationMapper
from messaging.integration_events import EVENTS_EXCHANGE, encode
from messaging.topology import COMMAND_OUTCOMES_EXCHANGE

IN_FLIGHT = 200
LATENCY_RATE = 200.0

CHILDREN: set[asyncio.subprocess.Process] = set()
"""Processes this run started and has not reaped yet: stopped on an interrupt too."""


@dataclass(frozen=True)
class Sizes:
    pipeline_orders: int
    broker_round_trips: int
    core_orders: int
    latency_seconds: float
    log_orders: int  # the event log the rebuild and gateway figures read
    memory_commands: int
    long_stream_events: int = 10_000
    stream_loads: int = 50  # load-and-decide runs per stream and setting
    workflow_orders: int = 500

    @classmethod
    def full(cls) -> Sizes:
        return cls(1500, 6000, 2000, 15.0, 5000, 100_000, 500)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(50, 400, 100, 2.0, 200, 2000, stream_loads=3, workflow_orders=20)


@dataclass
class BenchContext:
    amqp_url: str
    workdir: Path
    repeat: int
    sizes: Sizes
    memory_repeat: int = 1
    log: Callable[[str], None] = print
    _logs: dict[int, tuple[Path, Path]] = field(default_factory=dict)

    def settings(self, name: str) -> Settings:
        """Settings of one conveyor deployment: its own queues and SQLite files."""
        run = f"{name}-{uuid.uuid4().hex[:6]}"
        folder = self.workdir / run
        folder.mkdir(parents=True)
        return Settings(
            amqp_url=self.amqp_url,
            event_store=str(folder / "events.db"),
            read_store=str(folder / "readmodels.db"),
            command_queue=f"bench.{run}.commands",
            projection_queue_prefix=f"bench.{run}.projections",
            # Its own, or one figure's orders.confirmed would wait for the next figure's
            # process manager (whose event store has never heard of them).
            process_manager_queue=f"bench.{run}.fulfilment",
            http_port=0,
            ops_port=0,
        )


@dataclass
class Figure:
    key: str
    title: str
    unit: str
    reference: str
    target: str
    target_kind: str  # "ratio_at_least" | "value_at_most" | "memory"
    threshold: float
    values: list[float] = field(default_factory=list)
    references: list[float] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


# -- conveyor as a process ---------------------------------------------------------------


def conveyor_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "CONVEYOR_AMQP_URL": settings.amqp_url,
        "CONVEYOR_EVENT_STORE": settings.event_store,
        "CONVEYOR_READ_STORE": settings.read_store,
        "CONVEYOR_COMMAND_QUEUE": settings.command_queue,
        "CONVEYOR_PROJECTION_QUEUE_PREFIX": settings.projection_queue_prefix,
        "CONVEYOR_PROCESS_MANAGER_QUEUE": settings.process_manager_queue,
        "CONVEYOR_HTTP_PORT": "0",
        "CONVEYOR_OPS_PORT": "0",
    }


ORDER_PIPELINE = "commands,gateway,projections,http"
"""What the pipeline, latency and memory figures measure: `conveyor run` as it was before
the process manager joined its defaults (a confirmed order would start a workflow whose
commands those figures do not count)."""


class ConveyorProcess:
    """`python -m conveyor run --only <only>` (default: every component), as an operator
    starts it."""

    def __init__(self, settings: Settings, log: Path, only: str | None = ORDER_PIPELINE) -> None:
        self.settings = settings
        self.log = log
        self.only = only
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> ConveyorProcess:
        with self.log.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "conveyor",
                "run",
                *(["--only", self.only] if self.only else []),
                env=conveyor_env(self.settings),
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
            )
        CHILDREN.add(self.process)
        try:
            await self._until_consuming()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def exited(self) -> bool:
        return self.process is None or self.process.returncode is not None

    async def _until_consuming(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.exited:
                raise RuntimeError(f"conveyor run exited: {self.tail()}")
            with contextlib.suppress(Exception):
                if await consumers(self.settings.amqp_url, self.settings.command_queue):
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"conveyor run did not start consuming: {self.tail()}")

    async def stop(self) -> None:
        if self.process is None:
            return
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        CHILDREN.discard(self.process)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


async def consumers(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.consumer_count or 0


class ReferenceResponder:
    """The broker reference's responder, in its own process (see reference_broker)."""

    def __init__(self, amqp_url: str, queue: str) -> None:
        self.amqp_url = amqp_url
        self.queue = queue
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> ReferenceResponder:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.reference_broker",
            self.amqp_url,
            self.queue,
            stdout=asyncio.subprocess.PIPE,
        )
        CHILDREN.add(self.process)
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), 60)
            if line.strip() != b"ready":
                raise RuntimeError(f"reference responder did not start: {line!r}")
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.process is None:
            return
        if self.process.returncode is None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), 30)
        CHILDREN.discard(self.process)


# -- pipeline throughput -----------------------------------------------------------------


def bench_scripts(count: int) -> list[OrderScript]:
    return [
        OrderScript(order_id, customer_of(order_id), command_bodies(order_id))
        for order_id in order_ids(count)
    ]


async def pipeline_throughput(ctx: BenchContext) -> Figure:
    figure = Figure(
        key="pipeline",
        title="pipeline throughput",
        unit="commands/s",
        reference="aio-pika round trip (consume from quorum queue, confirmed reply, ack), "
        f"separate process, {IN_FLIGHT} in flight",
        target="≥ 0.5 x reference",
        target_kind="ratio_at_least",
        threshold=0.5,
    )
    orders = ctx.sizes.pipeline_orders
    round_trips = ctx.sizes.broker_round_trips
    figure.details.update(orders=orders, commands=orders * COMMANDS_PER_ORDER, in_flight=IN_FLIGHT)
    queue = f"bench.reference.{uuid.uuid4().hex[:6]}"
    async with ReferenceResponder(ctx.amqp_url, queue), Requester(ctx.amqp_url, queue) as req:
        await req.closed_loop(min(round_trips, 500), IN_FLIGHT)  # warm-up
        for attempt in range(ctx.repeat):
            settings = ctx.settings("pipeline")
            async with ConveyorProcess(settings, ctx.workdir / f"pipeline-{attempt}.log"):
                # Warm-up (imports, caches, JIT-less but cold SQLite pages), not measured.
                await run_demo(settings, 20, in_flight=IN_FLIGHT, scripts=bench_scripts(20))
                report = await run_demo(
                    settings,
                    orders,
                    in_flight=IN_FLIGHT,
                    scripts=bench_scripts(orders),
                    give_up_after=max(60.0, orders / 10),
                )
            if report.timed_out:
                raise RuntimeError(f"pipeline: {report.timed_out} orders did not finish")
            commands = sum(report.outcomes.values())
            figure.values.append(commands / report.seconds)
            trips = await req.closed_loop(round_trips, IN_FLIGHT)
            figure.references.append(round_trips / trips.seconds)
            ctx.log(
                f"  pipeline {figure.values[-1]:,.0f} commands/s, "
                f"broker {figure.references[-1]:,.0f} round trips/s"
            )
    figure.details["end_condition"] = (
        "every order's last accepted version visible in all three read models "
        "(order_summary, active_orders, customer_history), polled every 5 ms"
    )
    return figure


# -- fulfilment workflows end to end -------------------------------------------------------


async def seed_stock(amqp_url: str, stock: dict[str, int], *, within: float = 60.0) -> None:
    """ReceiveStock for each SKU on the inventory command queue; returns once each is
    accepted (its outcome seen)."""
    inventory = AGGREGATES.named("inventory")
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        outcomes_exchange = await channel.declare_exchange(
            COMMAND_OUTCOMES_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        outcomes = await channel.declare_queue(exclusive=True)
        await outcomes.bind(
            outcomes_exchange, routing_key=f"{inventory.contract.routing_key_prefix}command.#"
        )
        ids = set()
        for sku, quantity in stock.items():
            command_id = str(uuid.uuid4())
            ids.add(command_id)
            body = {
                "type": "ReceiveStock",
                "command_id": command_id,
                "sku": sku,
                "quantity": quantity,
            }
            await channel.default_exchange.publish(
                aio_pika.Message(json.dumps(body).encode(), content_type="application/json"),
                routing_key=inventory.command_queue,
            )
        async with asyncio.timeout(within), outcomes.iterator() as messages:
            async for message in messages:
                await message.ack()
                outcome = json.loads(message.body)
                if outcome["status"] != "accepted" and outcome["command_id"] in ids:
                    raise RuntimeError(f"stock not received: {outcome}")
                ids.discard(outcome["command_id"])
                if not ids:
                    return


class Fulfilments:
    """Counts `orders.fulfilled` integration events (its own queue on conveyor.events) and
    notes when the last of the orders waited for arrived."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.fulfilled: dict[str, float] = {}
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def __aenter__(self) -> Fulfilments:
        orders = AGGREGATES.named("order")
        self._connection = await aio_pika.connect(self.amqp_url)
        channel = await self._connection.channel()
        events = await channel.declare_exchange(
            EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(events, routing_key=orders.contract.routing_keys["OrderFulfilled"])
        await queue.consume(self._on_event, no_ack=True)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def _on_event(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        order_id = str(json.loads(message.body).get("order_id"))
        self.fulfilled.setdefault(order_id, time.monotonic())

    async def all_of(self, orders: Sequence[str], *, within: float) -> float:
        """Waits until every order is fulfilled; the moment the last one was."""
        wanted = set(orders)
        deadline = time.monotonic() + within
        while not wanted <= self.fulfilled.keys():
            if time.monotonic() > deadline:
                missing = len(wanted - self.fulfilled.keys())
                raise RuntimeError(f"workflows: {missing} orders were not fulfilled")
            await asyncio.sleep(0.01)
        return max(self.fulfilled[o] for o in wanted)


async def workflow_throughput(ctx: BenchContext) -> Figure:
    from chaos.provider import PaymentProvider, always_authorize

    figure = Figure(
        key="workflows",
        title="fulfilment workflows end to end",
        unit="workflows/s",
        reference="aio-pika round trip (consume from quorum queue, confirmed reply, ack), "
        f"separate process, {IN_FLIGHT} in flight",
        target="≥ 0.05 x reference",
        target_kind="ratio_at_least",
        threshold=0.05,
    )
    orders = ctx.sizes.workflow_orders
    warm_up = 20 if orders >= 100 else 0
    round_trips = ctx.sizes.broker_round_trips
    figure.details.update(
        orders=orders,
        in_flight=IN_FLIGHT,
        commands_per_workflow=COMMANDS_PER_ORDER + 2 * len(ITEMS) + 3,
        end_condition="orders created, 2 items added and confirmed (each order's commands in "
        "sequence, 200 orders at a time) until the `orders.fulfilled` of the last one "
        "arrives: stock reserved per line, payment requested, authorized by a payment "
        "provider in the harness, reservations committed, order fulfilled",
    )
    queue = f"bench.reference.{uuid.uuid4().hex[:6]}"
    async with ReferenceResponder(ctx.amqp_url, queue), Requester(ctx.amqp_url, queue) as req:
        await req.closed_loop(min(round_trips, 500), IN_FLIGHT)  # warm-up
        for attempt in range(ctx.repeat):
            settings = ctx.settings("workflows")
            async with (
                ConveyorProcess(settings, ctx.workdir / f"workflows-{attempt}.log", only=None),
                PaymentProvider(
                    settings.amqp_url, always_authorize, queue=f"{settings.command_queue}.psp"
                ),
                Fulfilments(settings.amqp_url) as fulfilments,
            ):
                phases = {"conveyor started": time.monotonic()}
                per_order = {sku: quantity for sku, quantity, _ in ITEMS}
                await seed_stock(
                    settings.amqp_url,
                    {sku: q * (orders + warm_up) for sku, q in per_order.items()},
                )
                if warm_up:
                    scripts = bench_scripts(warm_up)
                    await run_demo(settings, warm_up, in_flight=IN_FLIGHT, scripts=scripts)
                    await fulfilments.all_of([s.order_id for s in scripts], within=60)
                scripts = bench_scripts(orders)
                started = phases["stock seeded, warmed up"] = time.monotonic()
                await run_demo(
                    settings,
                    orders,
                    in_flight=IN_FLIGHT,
                    scripts=scripts,
                    give_up_after=max(60.0, orders / 5),
                )
                phases["orders in the read models"] = time.monotonic()
                last = await fulfilments.all_of(
                    [s.order_id for s in scripts], within=max(60.0, orders / 5)
                )
                phases["last fulfilled"] = last
            phases["stopped"] = time.monotonic()
            first = next(iter(phases.values()))
            figure.details.setdefault("phases_s", []).append(
                {name: round(t - first, 2) for name, t in phases.items()}
            )
            figure.values.append(orders / (last - started))
            trips = await req.closed_loop(round_trips, IN_FLIGHT)
            figure.references.append(round_trips / trips.seconds)
            ctx.log(
                f"  workflows {figure.values[-1]:,.1f}/s, "
                f"broker {figure.references[-1]:,.0f} round trips/s"
            )
    return figure


# -- command core ------------------------------------------------------------------------


async def conveyor_command_core(path: Path, orders: Sequence[str], concurrency: int) -> float:
    """Seconds for CommandHandler on SqliteEventStore to run every order's commands,
    `concurrency` orders at a time (each order's commands in sequence)."""
    store = await SqliteEventStore(path).open()
    try:
        handler = CommandHandler(store, AGGREGATES)
        pending = list(reversed(orders))

        async def worker() -> None:
            while pending:
                order_id = pending.pop()
                for command in domain_commands(order_id):
                    outcome = await handler.handle(envelope(command))
                    if outcome.status != "accepted":
                        raise RuntimeError(f"command core: {outcome}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started
    finally:
        await store.close()


def conveyor_sqlite_settings(path: Path) -> dict[str, Any]:
    from conveyor.embedded.sqlite_library import sqlite3

    connection = sqlite3.connect(path)
    try:
        journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        connection.close()
    # conveyor/embedded/sqlite.py sets synchronous=FULL on its writer connection (per connection,
    # so it cannot be read back from another one).
    return {"journal_mode": journal, "synchronous": "FULL", "group_commit": True}


async def command_core(ctx: BenchContext, threads: Sequence[int] = (1, 8)) -> Figure:
    figure = Figure(
        key="command_core",
        title="command core (load + decide + append)",
        unit="commands/s",
        reference="eventsourcing 9 Application on eventsourcing.sqlite, same Order workload, "
        f"best of {', '.join(map(str, threads))} thread(s)",
        target="≥ 2.0 x reference",
        target_kind="ratio_at_least",
        threshold=2.0,
    )
    orders = ctx.sizes.core_orders
    commands = orders * COMMANDS_PER_ORDER
    figure.details.update(orders=orders, commands=commands, concurrency=IN_FLIGHT)
    by_threads: dict[str, list[float]] = {str(t): [] for t in threads}
    for attempt in range(ctx.repeat):
        path = ctx.workdir / f"core-{attempt}-conveyor.db"
        seconds = await conveyor_command_core(path, order_ids(orders), IN_FLIGHT)
        figure.values.append(commands / seconds)
        figure.details["conveyor_sqlite"] = conveyor_sqlite_settings(path)
        best = 0.0
        for count in threads:
            es_path = ctx.workdir / f"core-{attempt}-eventsourcing-{count}.db"
            es_seconds = await asyncio.to_thread(
                reference_eventsourcing.command_core, es_path, order_ids(orders), count
            )
            by_threads[str(count)].append(commands / es_seconds)
            best = max(best, commands / es_seconds)
            figure.details["eventsourcing_sqlite"] = reference_eventsourcing.synchronous_setting(
                es_path
            )
        figure.references.append(best)
        ctx.log(f"  command core {figure.values[-1]:,.0f}/s, eventsourcing {best:,.0f}/s")
    figure.details["eventsourcing_by_threads"] = by_threads
    return figure


# -- latency at a steady rate ------------------------------------------------------------


@dataclass
class _Sent:
    order_id: str
    customer_id: str
    version: int
    sent_at: float
    visible_at: float | None = None


async def conveyor_latencies(
    settings: Settings, rate: float, seconds: float, spacing: float = 0.25
) -> tuple[list[float], int]:
    """Commands published at a steady `rate`, each timed from its publish until all three
    read models show the version it produced. Orders start at rate/4 per second; an
    order's four commands are `spacing` seconds apart. Returns (latencies ms, missing)."""
    from conveyor.bootstrap import open_read_store

    order_count = max(1, round(rate * seconds / COMMANDS_PER_ORDER))
    schedule: list[tuple[float, str, dict[str, Any], int]] = []
    for n, order_id in enumerate(order_ids(order_count)):
        start = n * COMMANDS_PER_ORDER / rate
        for index, body in enumerate(command_bodies(order_id)):
            schedule.append((start + index * spacing, order_id, body, index + 1))
    schedule.sort(key=lambda item: item[0])

    read_store = await open_read_store(settings)
    connection = await aio_pika.connect(settings.amqp_url)
    sent: list[_Sent] = []
    waiting: list[_Sent] = []
    try:
        channel = await connection.channel(publisher_confirms=True)
        collections = ProjectionCollections(read_store, cache_seconds=0)
        names = [(await collections.active(p.name)).collection for p in ORDER_PROJECTIONS]
        summary, histories, actives = names  # ORDER_PROJECTIONS order
        done = asyncio.Event()
        publishing: set[asyncio.Task[Any]] = set()

        async def watch() -> None:
            while True:
                if waiting:
                    ids = sorted({s.order_id for s in waiting})
                    got_summary = await read_store.get_many(summary, ids)
                    got_active = await read_store.get_many(actives, ids)
                    # customer_history: one document per order since the unbounded
                    # per-customer document was split (conveyor/readmodels/projections.py)
                    got_history = await read_store.get_many(histories, ids)
                    now = time.perf_counter()
                    for item in list(waiting):
                        script = OrderScript(item.order_id, item.customer_id, [])
                        script.final_version = item.version
                        if caught_up(script, got_summary, got_active, got_history):
                            item.visible_at = now
                            waiting.remove(item)
                elif done.is_set():
                    return
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        started = time.perf_counter()
        for at, order_id, body, version in schedule:
            delay = started + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            item = _Sent(order_id, customer_of(order_id), version, time.perf_counter())
            sent.append(item)
            waiting.append(item)
            task = asyncio.create_task(
                channel.default_exchange.publish(
                    aio_pika.Message(
                        _json(body),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=settings.command_queue,
                )
            )
            publishing.add(task)
            task.add_done_callback(publishing.discard)
        done.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watcher, 30)
        watcher.cancel()
    finally:
        await connection.close()
        await read_store.close()
    warm = [s for s in sent if s.sent_at - sent[0].sent_at >= 1.0] or sent  # skip ramp-up
    latencies = [(s.visible_at - s.sent_at) * 1000 for s in warm if s.visible_at is not None]
    return latencies, sum(1 for s in sent if s.visible_at is None)


def _json(body: dict[str, Any]) -> bytes:
    import json

    return json.dumps(body).encode()


async def latency(ctx: BenchContext) -> Figure:
    figure = Figure(
        key="latency",
        title=f"command → read-model latency p99 at {LATENCY_RATE:.0f} commands/s",
        unit="ms",
        reference=f"aio-pika round trip p99 at {LATENCY_RATE:.0f}/s (separate process)",
        target="p99 ≤ 50 ms",
        target_kind="value_at_most",
        threshold=50.0,
    )
    seconds = ctx.sizes.latency_seconds
    p50s: list[float] = []
    reference_p50s: list[float] = []
    missing = 0
    queue = f"bench.reference.{uuid.uuid4().hex[:6]}"
    async with ReferenceResponder(ctx.amqp_url, queue), Requester(ctx.amqp_url, queue) as req:
        await req.closed_loop(200, 50)  # warm-up
        for attempt in range(ctx.repeat):
            settings = ctx.settings("latency")
            async with ConveyorProcess(settings, ctx.workdir / f"latency-{attempt}.log"):
                await run_demo(settings, 20, in_flight=20, scripts=bench_scripts(20))  # warm-up
                latencies, lost = await conveyor_latencies(settings, LATENCY_RATE, seconds)
            missing += lost
            figure.values.append(percentile(latencies, 0.99))
            p50s.append(percentile(latencies, 0.5))
            trips = await req.open_loop(LATENCY_RATE, seconds)
            figure.references.append(percentile(trips.latencies_ms, 0.99))
            reference_p50s.append(percentile(trips.latencies_ms, 0.5))
            ctx.log(
                f"  latency p50 {p50s[-1]:.1f} ms p99 {figure.values[-1]:.1f} ms; "
                f"broker p50 {reference_p50s[-1]:.2f} ms p99 {figure.references[-1]:.2f} ms"
            )
    figure.details.update(
        rate=LATENCY_RATE,
        seconds=seconds,
        p50_ms=p50s,
        reference_p50_ms=reference_p50s,
        not_visible_within_30s=missing,
        measured="from publishing a command until all three read models show the version it "
        "produced (polled every 2 ms); the first second of each run is ramp-up, not counted",
    )
    return figure


# -- an event log for the rebuild and gateway figures ------------------------------------


async def conveyor_log(ctx: BenchContext) -> tuple[Path, int]:
    """A conveyor event store holding the workload's events for `log_orders` orders."""
    path = ctx.workdir / "log-conveyor.db"
    orders = ctx.sizes.log_orders
    if not path.exists():
        await conveyor_command_core(path, order_ids(orders), IN_FLIGHT)
    return path, orders * COMMANDS_PER_ORDER


# -- rebuild -----------------------------------------------------------------------------


async def rebuild_all(
    event_store_path: Path, read_store_path: Path
) -> tuple[float, dict[str, Any]]:
    event_store = await SqliteEventStore(event_store_path).open()
    read_store = await SqliteReadModelStore(read_store_path).open()
    try:
        collections = ProjectionCollections(read_store, cache_seconds=0)
        started = time.perf_counter()
        reports = await rebuild_projections(event_store, read_store, collections)
        seconds = time.perf_counter() - started
        return seconds, {r.name: round(r.events_per_second) for r in reports}
    finally:
        await read_store.close()
        await event_store.close()


async def rebuild_speed(ctx: BenchContext) -> Figure:
    figure = Figure(
        key="rebuild",
        title="rebuild (all three read models, fresh SQLite)",
        unit="events/s",
        reference="eventsourcing replay: notification log folded into in-memory aggregates",
        target="≥ 1.0 x reference",
        target_kind="ratio_at_least",
        threshold=1.0,
    )
    log_path, events = await conveyor_log(ctx)
    es_path = ctx.workdir / "log-eventsourcing.db"
    es_events = await asyncio.to_thread(
        reference_eventsourcing.populate, es_path, order_ids(ctx.sizes.log_orders)
    )
    per_projection: list[dict[str, Any]] = []
    for attempt in range(ctx.repeat):
        seconds, rates = await rebuild_all(log_path, ctx.workdir / f"rebuild-{attempt}.db")
        figure.values.append(events / seconds)
        per_projection.append(rates)
        folded, es_seconds = await asyncio.to_thread(reference_eventsourcing.replay, es_path)
        figure.references.append(folded / es_seconds)
        ctx.log(
            f"  rebuild {figure.values[-1]:,.0f} events/s, "
            f"eventsourcing replay {figure.references[-1]:,.0f} events/s"
        )
    figure.details.update(
        events=events,
        reference_events=es_events,
        measured="one rebuild of all three read models (conveyor.readmodels.rebuild.rebuild_all: "
        "one pass over the log feeds them all); events/s = events in the log / wall time",
        per_projection_events_per_second=per_projection,
    )
    return figure


# -- gateway -----------------------------------------------------------------------------


async def _purge(amqp_url: str, queues: Sequence[str]) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in queues:
            queue = await channel.declare_queue(name, passive=True)
            await queue.purge()


async def gateway_speed(ctx: BenchContext) -> Figure:
    figure = Figure(
        key="gateway",
        title="gateway relay (publisher confirms)",
        unit="events/s",
        reference="aio-pika pipelined confirmed publish of the same bodies, same window",
        target="≥ 0.8 x reference",
        target_kind="ratio_at_least",
        threshold=0.8,
    )
    log_path, _ = await conveyor_log(ctx)
    settings = ctx.settings("gateway")
    store = await SqliteEventStore(log_path).open()
    broker = build_broker(settings)
    try:
        messages: list[tuple[str, bytes, str, str]] = []
        customers = IntegrationMapper(store, AGGREGATES)
        position = 0
        while page := await store.read_all(after=position, limit=5000):
            for stored in page:
                event = await customers.integration_event(stored)
                if event is not None:
                    messages.append(
                        (event.routing_key, encode(event), str(event.event_id), event.type)
                    )
            position = page[-1].position
        await broker.connect()
        await declare_topology(settings, broker, commands=False, events=True)
        queues = [projection_queue(settings, p).name for p in ORDER_PROJECTIONS]
        window = settings.gateway_batch_size
        for attempt in range(ctx.repeat):
            read_store: ReadModelStore = await SqliteReadModelStore(
                ctx.workdir / f"gateway-{attempt}.db"
            ).open()
            try:
                gateway = build_gateway(settings, broker, store, read_store)
                stop = asyncio.Event()
                started = time.perf_counter()
                task = asyncio.create_task(gateway.run(stop))
                while gateway.published < len(messages):
                    if task.done():
                        raise RuntimeError(f"gateway stopped: {gateway.last_error}")
                    await asyncio.sleep(0.002)
                seconds = time.perf_counter() - started
                stop.set()
                await task
            finally:
                await read_store.close()
            figure.values.append(len(messages) / seconds)
            await _purge(settings.amqp_url, queues)
            ref_seconds = await pipelined_publish(
                settings.amqp_url, EVENTS_EXCHANGE, messages, window
            )
            figure.references.append(len(messages) / ref_seconds)
            await _purge(settings.amqp_url, queues)
            ctx.log(
                f"  gateway {figure.values[-1]:,.0f} events/s, "
                f"raw publish {figure.references[-1]:,.0f} events/s"
            )
        figure.details.update(
            events=len(messages),
            window=window,
            bound_queues=len(queues),
            measured="both publish to conveyor.events with the three projection queues bound "
            "(each message lands in three quorum queues), persistent, mandatory=False",
        )
    finally:
        with contextlib.suppress(Exception):
            await broker.stop()
        await store.close()
    return figure


# -- memory ------------------------------------------------------------------------------


async def publish_backlog(settings: Settings, bodies: Sequence[dict[str, Any]]) -> float:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        slots = asyncio.Semaphore(1000)
        started = time.perf_counter()

        async def publish(body: dict[str, Any]) -> None:
            try:
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        _json(body),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=settings.command_queue,
                )
            finally:
                slots.release()

        tasks = []
        for body in bodies:
            await slots.acquire()
            tasks.append(asyncio.create_task(publish(body)))
        await asyncio.gather(*tasks)
        return time.perf_counter() - started


def backlog(orders: Sequence[str], block: int = 500) -> list[dict[str, Any]]:
    """The orders' commands in blocks: every create of a block, then every first item…,
    so that the worker always has many distinct orders in its prefetch window."""
    bodies: list[dict[str, Any]] = []
    for start in range(0, len(orders), block):
        scripts = [command_bodies(order_id) for order_id in orders[start : start + block]]
        for index in range(COMMANDS_PER_ORDER):
            bodies.extend(script[index] for script in scripts)
    return bodies


async def _drained(read_store: ReadModelStore, orders: int) -> bool:
    collections = ProjectionCollections(read_store, cache_seconds=0)
    for name in ("order_summary", "active_orders"):
        collection = (await collections.active(name)).collection
        if await read_store.count(collection, where={"status": "confirmed"}) < orders:
            return False
    history = (await collections.active("customer_history")).collection
    documents = await read_store.find(history, limit=1_000_000)  # one per order
    confirmed = sum(1 for doc in documents if doc.body["version"] >= 4)
    return confirmed >= orders


def slope_per_minute(samples: Sequence[tuple[float, float]]) -> float:
    if len(samples) < 2:
        return 0.0
    fit = statistics.linear_regression([t for t, _ in samples], [m for _, m in samples])
    return fit.slope * 60


async def memory(ctx: BenchContext) -> Figure:
    figure = Figure(
        key="memory",
        title="memory: peak RSS draining a backlog",
        unit="MB",
        reference="—",
        target="peak < 250 MB, flat after warm-up",
        target_kind="memory",
        threshold=250.0,
    )
    commands = ctx.sizes.memory_commands
    orders = max(1, commands // COMMANDS_PER_ORDER)
    runs: list[dict[str, Any]] = []
    for attempt in range(ctx.memory_repeat):
        settings = ctx.settings("memory")
        broker = build_broker(settings)
        await broker.connect()
        try:
            await declare_topology(settings, broker, commands=True, events=True)
        finally:
            await broker.stop()
        publish_seconds = await publish_backlog(settings, backlog(order_ids(orders)))
        samples: list[tuple[float, float]] = []
        from conveyor.bootstrap import open_read_store

        started = time.perf_counter()
        async with ConveyorProcess(settings, ctx.workdir / f"memory-{attempt}.log") as worker:
            process = psutil.Process(worker.pid)
            read_store = await open_read_store(settings)
            try:
                last_check = 0.0
                while True:
                    now = time.perf_counter() - started
                    samples.append((now, process.memory_info().rss / 2**20))
                    if now - last_check >= 1.0:
                        last_check = now
                        if await _drained(read_store, orders):
                            break
                    if worker.exited:
                        raise RuntimeError(f"conveyor run died: {worker.tail()}")
                    await asyncio.sleep(0.25)
            finally:
                await read_store.close()
        seconds = samples[-1][0]
        # Warm-up: the first fifth of the drain (imports, caches and prefetch filling up).
        after = [(t, m) for t, m in samples if t >= seconds * 0.2]
        slope = slope_per_minute(after)
        last_half = slope_per_minute([(t, m) for t, m in samples if t >= seconds * 0.5])
        peak = max(m for _, m in samples)
        growth = slope * (after[-1][0] - after[0][0]) / 60 if len(after) > 1 else 0.0
        flat = growth < max(0.05 * peak, 5.0)
        figure.values.append(peak)
        runs.append(
            {
                "commands": orders * COMMANDS_PER_ORDER,
                "publish_seconds": round(publish_seconds, 2),
                "drain_seconds": round(seconds, 2),
                "drain_commands_per_second": round(orders * COMMANDS_PER_ORDER / seconds, 1),
                "peak_rss_mb": round(peak, 1),
                "rss_after_warmup_start_mb": round(after[0][1], 1) if after else None,
                "slope_mb_per_minute_after_warmup": round(slope, 3),
                "slope_mb_per_minute_last_half": round(last_half, 3),
                "growth_mb_after_warmup": round(growth, 2),
                "flat": flat,
                "samples": [(round(t, 2), round(m, 1)) for t, m in samples],
            }
        )
        ctx.log(
            f"  memory: {orders * COMMANDS_PER_ORDER} commands in {seconds:.0f}s, peak "
            f"{peak:.0f} MB, slope after warm-up {slope:+.2f} MB/min"
        )
    figure.details["runs"] = runs
    figure.details["flat_rule"] = (
        "least-squares slope of RSS after the first 20% of the drain, times that window, "
        "grows by less than max(5% of peak, 5 MB)"
    )
    return figure


# -- long streams: load-and-decide with snapshots ----------------------------------------

SHORT_STREAM_EVENTS = 10


async def _inventory_stream(store: SqliteEventStore, sku: str, events: int) -> None:
    from conveyor.eventstore.port import NewEvent

    now = datetime.now(UTC)
    for start in range(0, events, 1000):
        batch = [
            NewEvent(
                event_id=uuid.uuid4(),
                type="StockReceived",
                data={"quantity": 1},
                occurred_at=now,
                metadata={"command_id": f"{sku}-{n}"},
            )
            for n in range(start, min(start + 1000, events))
        ]
        await store.append(f"inventory-{sku}", start, batch)


async def _load_and_decide_ms(
    store: SqliteEventStore, definition: Any, sku: str, loads: int
) -> float:
    """Median ms of loading the SKU (snapshot + tail, or the whole stream) and deciding a
    ReceiveStock on it: what a command pays before its append."""
    from conveyor.application.loading import AggregateLoader
    from domain.inventory.commands import ReceiveStock

    loader = AggregateLoader(store, clock=lambda: datetime.now(UTC))
    timings = []
    for _ in range(loads):
        started = time.perf_counter()
        loaded = await loader.load(definition, sku)
        definition.decide(loaded.state, ReceiveStock(sku, 1))
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


async def long_streams(ctx: BenchContext) -> Figure:
    """Inventory's load-and-decide on a 10,000-event stream against a 10-event one, with
    snapshots on (every 100): the long stream's snapshot is placed at its worst, 99 events
    before the end, so the tail folded is the longest the interval allows."""
    from conveyor.aggregates.inventory import inventory_registry
    from conveyor.application.loading import snapshot_of

    events = ctx.sizes.long_stream_events
    on = inventory_registry().named("inventory")
    off = inventory_registry(snapshot_every=None).named("inventory")
    every = on.snapshot_every or 1
    figure = Figure(
        key="long_streams",
        title=f"load + decide, Inventory stream of {events:,} events, snapshots every {every}",
        unit="ms",
        reference=f"the same on a {SHORT_STREAM_EVENTS}-event stream (same run, snapshots on)",
        target="≤ 2.0 x reference",
        target_kind="ratio_at_most",
        threshold=2.0,
    )
    path = ctx.workdir / "long-streams.db"
    store = await SqliteEventStore(path).open()
    try:
        await _inventory_stream(store, "LONG", events)
        await _inventory_stream(store, "SHORT", SHORT_STREAM_EVENTS)
        covered = events - (every - 1)
        stream = await store.read_stream("inventory-LONG", to_version=covered)
        await store.save_snapshot(
            snapshot_of(
                on,
                "inventory-LONG",
                on.fold("LONG", stream),
                aggregate_version=covered,
                stream_version=covered,
                recent_command_ids=[e.metadata["command_id"] for e in stream[-1000:]],
                taken_at=datetime.now(UTC),
            )
        )
        without: dict[str, list[float]] = {"long": [], "short": []}
        for _ in range(ctx.repeat):
            figure.values.append(
                await _load_and_decide_ms(store, on, "LONG", ctx.sizes.stream_loads)
            )
            figure.references.append(
                await _load_and_decide_ms(store, on, "SHORT", ctx.sizes.stream_loads)
            )
            without["long"].append(
                await _load_and_decide_ms(store, off, "LONG", max(ctx.sizes.stream_loads // 5, 1))
            )
            without["short"].append(
                await _load_and_decide_ms(store, off, "SHORT", ctx.sizes.stream_loads)
            )
            ctx.log(
                f"  long streams: snapshots on {figure.values[-1]:.2f} ms vs "
                f"{figure.references[-1]:.2f} ms; off {without['long'][-1]:.2f} ms vs "
                f"{without['short'][-1]:.2f} ms"
            )
    finally:
        await store.close()
    long_off, short_off = statistics.median(without["long"]), statistics.median(without["short"])
    figure.details.update(
        events=events,
        short_events=SHORT_STREAM_EVENTS,
        snapshot_every=every,
        tail_events=events - covered,
        loads_per_sample=ctx.sizes.stream_loads,
        snapshots_off_ms={"long": without["long"], "short": without["short"]},
        snapshots_off_ratio=long_off / short_off if short_off else None,
    )
    return figure


FIGURES: dict[str, Callable[[BenchContext], Awaitable[Figure]]] = {
    "pipeline": pipeline_throughput,
    "command_core": command_core,
    "latency": latency,
    "rebuild": rebuild_speed,
    "gateway": gateway_speed,
    "memory": memory,
    "long_streams": long_streams,
    "workflows": workflow_throughput,
}
