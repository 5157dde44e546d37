"""The gateway against the real broker: every stored event is published, with its
contract, exactly once in a normal run and at least once across a SIGKILL."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from conveyor.aggregates import AGGREGATES
from conveyor.application.commands import CommandEnvelope, CommandHandler
from conveyor.bootstrap import build_broker, build_gateway, open_read_store
from conveyor.eventstore.port import NewEvent
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.settings import Settings
from domain.orders.commands import AddItem, CancelOrder, ConfirmOrder, CreateOrder, RemoveItem
from tests.processes import start_conveyor
from tests.rabbit import eventually, queue_depth
from workers.host import WorkerHost

pytestmark = pytest.mark.rabbitmq


@dataclass
class EventTap:
    """An independent consumer bound to conveyor.events: what another service would see."""

    messages: dict[str, list[aio_pika.abc.AbstractIncomingMessage]] = field(default_factory=dict)

    def count(self) -> Counter[str]:
        return Counter({event_id: len(copies) for event_id, copies in self.messages.items()})


@pytest.fixture
async def tap(amqp_url: str) -> AsyncIterator[EventTap]:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("conveyor.events", "topic", durable=True)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key="orders.#")
    tapped = EventTap()

    async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            tapped.messages.setdefault(str(message.message_id), []).append(message)

    await queue.consume(collect)
    yield tapped
    await connection.close()


async def store_orders(path: str, orders: int, prefix: str = "o") -> int:
    """Create, fill, confirm or cancel orders directly in the event store; returns events."""
    store = await SqliteEventStore(path).open()
    handler = CommandHandler(store, AGGREGATES)
    count = 0

    async def one(n: int) -> int:
        order_id = f"{prefix}-{n}"
        commands: list[Any] = [
            CreateOrder(order_id, f"customer-{n % 7}"),
            AddItem(order_id, "SKU-1", 2, Decimal("9.99")),
            AddItem(order_id, "SKU-2", 1, Decimal("0.50")),
            RemoveItem(order_id, "SKU-2"),
            ConfirmOrder(order_id) if n % 3 else CancelOrder(order_id, "changed mind"),
        ]
        for command in commands:
            command_id = str(uuid.uuid4())
            await handler.handle(CommandEnvelope(command, command_id, f"corr-{n}", command_id))
        return len(commands)

    try:
        for start in range(0, orders, 50):
            count += sum(
                await asyncio.gather(*(one(n) for n in range(start, min(start + 50, orders))))
            )
    finally:
        await store.close()
    return count


async def test_every_stored_event_is_published_once_with_its_contract(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    tap: EventTap,
) -> None:
    stored = await store_orders(settings.event_store, 40)
    await start_worker(settings, ("gateway",))
    await eventually(lambda: len(tap.messages) >= stored, within=30, what="all events")
    await asyncio.sleep(0.5)  # a duplicate would show up now
    assert len(tap.messages) == stored
    assert set(tap.count().values()) == {1}

    reader = await SqliteEventStore(settings.event_store).open()
    try:
        log = await reader.read_all(limit=10_000)
    finally:
        await reader.close()
    assert {str(e.event_id) for e in log} == set(tap.messages)

    first = tap.messages[str(log[0].event_id)][0]
    assert first.routing_key == "orders.created"
    assert first.type == "OrderCreated"
    assert first.content_type == "application/json"
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    body = json.loads(first.body)
    assert body["event_id"] == str(log[0].event_id)
    assert body["type"] == "OrderCreated"
    assert body["schema_version"] == 1
    order_id = log[0].stream_id.removeprefix("order-")
    n = int(order_id.removeprefix("o-"))
    assert body["order_id"] == order_id
    assert body["customer_id"] == f"customer-{n % 7}"
    assert body["version"] == 1
    assert body["correlation_id"] == f"corr-{n}"
    assert body["causation_id"] == log[0].metadata["causation_id"]
    assert body["data"] == {"customer_id": f"customer-{n % 7}"}
    assert datetime.fromisoformat(body["occurred_at"]) == log[0].occurred_at

    second = next(e for e in log if e.stream_id == log[0].stream_id and e.version == 2)
    added = json.loads(tap.messages[str(second.event_id)][0].body)
    assert added["type"] == "ItemAdded"
    assert added["customer_id"] == f"customer-{n % 7}"  # enriched: only OrderCreated has it
    assert added["data"] == {
        "sku": "SKU-1",
        "quantity": 2,
        "unit_price": "9.99",
        "currency": "EUR",
    }
    keys = {copies[0].routing_key for copies in tap.messages.values()}
    assert keys == {
        "orders.created",
        "orders.item-added",
        "orders.item-removed",
        "orders.confirmed",
        "orders.cancelled",
    }


async def test_only_one_of_two_gateways_publishes_and_the_other_takes_over(
    settings: Settings, tap: EventTap
) -> None:
    stored = await store_orders(settings.event_store, 20)
    event_store = await SqliteEventStore(settings.event_store).open()
    read_store = await open_read_store(settings)
    brokers = [build_broker(settings), build_broker(settings)]
    gateways = [build_gateway(settings, b, event_store, read_store) for b in brokers]
    stops = [asyncio.Event(), asyncio.Event()]
    for broker in brokers:
        await broker.connect()
    tasks = [asyncio.create_task(g.run(s)) for g, s in zip(gateways, stops, strict=True)]
    try:
        await eventually(lambda: len(tap.messages) >= stored, within=30)
        assert [g.active for g in gateways].count(True) == 1
        active = 0 if gateways[0].active else 1
        standby = 1 - active

        stops[active].set()  # the active one stops (and releases its lease)
        await tasks[active]
        more = await store_orders(settings.event_store, 10, prefix="later")
        await eventually(lambda: len(tap.messages) >= stored + more, within=30)
        assert gateways[standby].active
        await asyncio.sleep(0.5)
        assert set(tap.count().values()) == {1}
        assert gateways[active].published + gateways[standby].published == stored + more
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks)
        for broker in brokers:
            await broker.stop()
        await read_store.close()
        await event_store.close()


@pytest.mark.slow
async def test_a_gateway_killed_mid_stream_loses_nothing(
    settings: Settings, tap: EventTap, tmp_path: Path
) -> None:
    stored = await store_orders(settings.event_store, 1000)  # 5000 events

    def start() -> subprocess.Popen[bytes]:
        return start_conveyor(
            settings,
            "gateway",
            tmp_path / "gateway.log",
            CONVEYOR_GATEWAY_BATCH_SIZE="100",
            CONVEYOR_GATEWAY_LEASE_SECONDS="1",
        )

    first = start()
    try:
        await eventually(lambda: len(tap.messages) >= stored // 4, within=60, what="progress")
        first.send_signal(signal.SIGKILL)
        first.wait()
        published_before_kill = len(tap.messages)
        assert published_before_kill < stored, "killed too late to prove anything"
        second = start()
        try:
            await eventually(lambda: len(tap.messages) >= stored, within=90, what="all events")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    counts = tap.count()
    assert len(counts) == stored  # at least once: nothing lost
    # duplicates only from the page in flight when the gateway died
    assert sum(counts.values()) - stored <= 100


async def test_foreign_events_in_the_log_are_skipped_not_fatal(
    settings: Settings, start_worker: Callable[..., Awaitable[WorkerHost]], tap: EventTap
) -> None:
    store = await SqliteEventStore(settings.event_store).open()
    try:
        foreign = NewEvent(uuid.uuid4(), "StockReserved", {"sku": "X"}, datetime.now(UTC))
        await store.append("inventory-1", 0, [foreign])
        odd = NewEvent(uuid.uuid4(), "OrderArchived", {}, datetime.now(UTC))
        await store.append("order-odd", 0, [odd])
    finally:
        await store.close()
    stored = await store_orders(settings.event_store, 3)
    host = await start_worker(settings, ("gateway",))
    await eventually(lambda: len(tap.messages) >= stored, within=30)
    assert str(foreign.event_id) not in tap.messages
    assert host.gateway is not None
    gateway = host.gateway
    # `published` moves once the page's checkpoint is saved, a moment after the confirms
    # that let the tap see the messages.
    await eventually(lambda: gateway.published >= stored, within=10)
    assert gateway.published == stored


async def test_the_gateway_alone_declares_the_projection_queues(
    settings: Settings, start_worker: Callable[..., Awaitable[WorkerHost]], amqp_url: str
) -> None:
    """Events relayed before any projection worker ever ran must wait in their queues."""
    stored = await store_orders(settings.event_store, 4)
    await start_worker(settings, ("gateway",))
    for name in ("order_summary", "customer_history", "active_orders"):
        queue = f"{settings.projection_queue_prefix}.{name}"
        await eventually(
            lambda queue=queue: _depth_is(amqp_url, queue, stored), within=30, what=queue
        )


async def _depth_is(amqp_url: str, queue: str, expected: int) -> bool:
    return await queue_depth(amqp_url, queue) == expected
