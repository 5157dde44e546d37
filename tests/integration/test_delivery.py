"""Delivery holes on the RabbitMQ paths (issue 16), each against the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import aio_pika
import pytest

from conveyor.aggregates import AGGREGATES
from conveyor.application.commands import CommandEnvelope, CommandHandler
from conveyor.bootstrap import (
    build_broker,
    build_gateway,
    command_queue,
    declare_topology,
    open_read_store,
)
from conveyor.embedded.sqlite_library import sqlite3
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.gateway.relay import GATEWAY_CHECKPOINT, EventGateway
from conveyor.observability.health import broker_connection
from conveyor.operations.dead_letters import describe, error_type_of
from conveyor.operations.management import ManagementApi
from conveyor.readmodels.checkpoints import LeasedCheckpoint
from conveyor.readmodels.projections import ORDER_PROJECTIONS
from conveyor.settings import Settings
from domain.orders.commands import AddItem, ConfirmOrder, CreateOrder
from messaging import failures
from messaging.failures import FailureRouter
from messaging.topology import WorkQueue
from tests.integration.test_projections import read_models_settle
from tests.rabbit import MANAGEMENT_URL, eventually, publish_many, queue_depth
from workers.host import WorkerHost


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        yield await connection.channel(publisher_confirms=True)


async def _deliveries(
    channel: aio_pika.abc.AbstractChannel, count: int, message_id: str
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """`count` real, unacked deliveries that share one message_id (copies of one event)."""
    queue = await channel.declare_queue(f"scratch.{uuid.uuid4().hex[:8]}", auto_delete=True)
    for number in range(count):
        await channel.default_exchange.publish(
            aio_pika.Message(f"copy {number}".encode(), message_id=message_id),
            routing_key=queue.name,
        )
    received = []
    for _ in range(count):
        message = await queue.get(no_ack=True, timeout=5)
        assert message is not None
        received.append(message)
    return received


async def test_copies_of_one_message_routed_at_once_are_each_confirmed_or_returned_as_their_own(
    settings: Settings, channel: aio_pika.abc.AbstractChannel
) -> None:
    """aiormq matches a basic.return to its publish by message_id. Two copies of one event
    routed at once on the shared channel, the first to a queue that is gone: its return must
    fail *its* route, not the other one's (which would ack an original whose copy was lost).
    """
    run = uuid.uuid4().hex[:8]
    gone = WorkQueue(f"projections.{run}.gone", (0.2,), 5)
    present = WorkQueue(f"projections.{run}.present", (0.2,), 5)
    for queue in present.retries():
        await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)
    broker = build_broker(settings)
    await broker.connect()
    try:
        to_gone = FailureRouter(broker, gone, max_attempts=3)
        to_present = FailureRouter(broker, present, max_attempts=3)
        first, second = await _deliveries(channel, 2, "event-1")
        outcomes = await asyncio.gather(
            to_gone.retry_later(first, RuntimeError("x")),
            to_present.retry_later(second, RuntimeError("y")),
            return_exceptions=True,
        )
    finally:
        await broker.stop()
    assert isinstance(outcomes[0], BaseException), outcomes
    assert not isinstance(outcomes[1], BaseException), outcomes
    tier = await channel.declare_queue(present.retry_queue_for(1), passive=True)
    copy = await tier.get(no_ack=True, timeout=5)
    assert copy is not None
    assert copy.body == b"copy 1"
    assert copy.message_id != "event-1"  # a copy has an id of its own...
    assert copy.headers[failures.ORIGINAL_MESSAGE_ID] == "event-1"  # ...and names the original
    assert failures.original_message_id(copy) == "event-1"
    assert describe(copy, present.dead_letter_queue).message_id == "event-1"
    await channel.queue_delete(tier.name)


def test_a_retry_copy_the_broker_dead_lettered_shows_the_brokers_reason_not_a_stale_one() -> None:
    """A retry copy carries the error of the attempt that sent it round the ladder; when the
    broker then dead-letters it (delivery limit, reject), that is the reason it is there."""
    stale = {
        failures.ERROR_TYPE: "ProjectionGap",
        failures.ATTEMPTS: 1,
        "x-death": [
            {"queue": "projections.x", "reason": b"delivery_limit", "count": 1},
            {"queue": "projections.x.retry.200ms", "reason": b"expired", "count": 1},
        ],
    }
    assert error_type_of(stale) == "delivery_limit"
    ours = {failures.ERROR_TYPE: "ProjectionGap", failures.DEAD_LETTERED_AT: "2026-12-01T00:00"}
    assert error_type_of(ours) == "ProjectionGap"


async def _store_commands(settings: Settings, commands: list[Any]) -> None:
    store = await SqliteEventStore(settings.event_store).open()
    try:
        handler = CommandHandler(store, AGGREGATES)
        for command in commands:
            command_id = str(uuid.uuid4())
            outcome = await handler.handle(CommandEnvelope(command, command_id, "c", command_id))
            assert outcome.status == "accepted", outcome
    finally:
        await store.close()


async def test_events_a_deleted_projection_queue_lost_are_healed_from_the_event_store(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    amqp_url: str,
    channel: aio_pika.abc.AbstractChannel,
) -> None:
    """An operator deletes a projection queue while the gateway publishes: the broker confirms
    the events (the other queues got them) and the checkpoint moves on, so the deleted
    queue's projection never gets them from the broker. Once the queue is back, a later
    event of such an order shows a gap, filled from the event store at once; an order with
    no later event (its last or even its first event lost: no gap ever) is healed by the
    reconciler. The read models end equal to a rebuild, with nothing dead-lettered."""
    settings = settings.model_copy(update={"reconcile_settle_seconds": 0.3})
    gateway = await start_worker(settings, ("gateway",))
    summary = f"{settings.projection_queue_prefix}.order_summary"
    await channel.queue_delete(summary, if_unused=False, if_empty=False)
    orders = [f"lost-{n}" for n in range(12)]
    await _store_commands(
        settings,
        [CreateOrder(o, f"customer-{n % 3}") for n, o in enumerate(orders)]
        + [AddItem(o, "SKU-1", 2, Decimal("1.25")) for o in orders[:8]],
    )
    reader = await SqliteEventStore(settings.event_store).open()
    try:
        head = await reader.head_position()
    finally:
        await reader.close()
    assert gateway.gateway is not None
    checkpoint = gateway.gateway._checkpoint
    await eventually(lambda: checkpoint.position >= head, what="the gateway past the loss")

    await start_worker(settings, ("projections",))  # declares the queue again
    # Half the orders get later events (a gap: filled at once); the others never do.
    await _store_commands(
        settings,
        [AddItem(o, "SKU-2", 1, Decimal("3.00")) for o in orders[:4]]
        + [ConfirmOrder(o) for o in orders[:2]]
        + [CreateOrder("after-1", "customer-9")],
    )
    await read_models_settle(settings, within=30)
    for projection in ORDER_PROJECTIONS:
        queue = f"{settings.projection_queue_prefix}.{projection.name}"
        assert await queue_depth(amqp_url, f"{queue}.dlq") == 0


async def test_a_command_redelivered_after_its_append_publishes_its_accepted_outcome(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    channel: aio_pika.abc.AbstractChannel,
) -> None:
    """A worker appended the command's events and died before publishing the outcome: the
    redelivery finds them (a duplicate) and must still tell orders.command.accepted."""
    for queue in command_queue(settings).all_queues():
        await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)
    outcomes_exchange = await channel.declare_exchange(
        "conveyor.command-outcomes", aio_pika.ExchangeType.TOPIC, durable=True
    )
    accepted = await channel.declare_queue(exclusive=True)
    await accepted.bind(outcomes_exchange, routing_key="orders.command.accepted")
    body = {"type": "CreateOrder", "command_id": "k-1", "order_id": "o-died", "customer_id": "c"}
    await channel.default_exchange.publish(
        aio_pika.Message(json.dumps(body).encode(), message_id="k-1"),
        routing_key=settings.command_queue,
    )
    # The dying worker: takes the delivery, appends, and goes away without an outcome or ack.
    connection = await aio_pika.connect(settings.amqp_url)
    taken = await (await connection.channel()).declare_queue(settings.command_queue, passive=True)
    delivery = await taken.get(no_ack=False, timeout=5)
    assert delivery is not None
    store = await SqliteEventStore(settings.event_store).open()
    try:
        envelope = CommandEnvelope(CreateOrder("o-died", "c"), "k-1", "k-1", "k-1")
        assert (await CommandHandler(store, AGGREGATES).handle(envelope)).status == "accepted"
    finally:
        await store.close()
    await connection.close()  # the broker redelivers, flagged redelivered

    await start_worker(settings)
    outcome = await eventually(
        lambda: accepted.get(fail=False, no_ack=True), what="an accepted outcome"
    )
    assert json.loads(outcome.body)["command_id"] == "k-1"
    assert outcome.message_id == "k-1:accepted"


async def test_a_rejected_command_resent_as_a_fresh_message_stays_rejected(
    settings: Settings, start_worker: Callable[..., Awaitable[WorkerHost]], amqp_url: str
) -> None:
    """A client whose confirm was lost resends its command under the same command_id: a new
    message, not flagged as seen before. Rejected once, it must never be accepted later."""
    await start_worker(settings)
    add = {
        "type": "AddItem",
        "command_id": "resent-1",
        "order_id": "o-resent",
        "sku": "SKU",
        "quantity": 1,
        "unit_price": "1.00",
    }
    create = {
        "type": "CreateOrder",
        "command_id": "c-1",
        "order_id": "o-resent",
        "customer_id": "c",
    }
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)

        async def send(body: dict[str, Any]) -> dict[str, Any]:
            await channel.default_exchange.publish(
                aio_pika.Message(json.dumps(body).encode(), reply_to=replies.name),
                routing_key=settings.command_queue,
            )
            reply = await eventually(lambda: replies.get(fail=False, no_ack=True), what="reply")
            return dict(json.loads(reply.body))

        first = await send(add)
        assert first["status"] == "rejected"
        assert (await send(create))["status"] == "accepted"
        assert await send(add) == first  # the resend: the same rejection, not an acceptance
    store = await SqliteEventStore(settings.event_store).open()
    try:
        # the rejection's marker, then the order: never the AddItem
        assert [e.type for e in await store.read_stream("order-o-resent")] == [
            "CommandRejected",
            "OrderCreated",
        ]
    finally:
        await store.close()


ALARM_NODE = os.environ.get("CONVEYOR_TEST_ALARM_NODE")
ALARM_AMQP_URL = os.environ.get("CONVEYOR_TEST_ALARM_AMQP_URL")


@pytest.mark.skipif(
    not (ALARM_NODE and ALARM_AMQP_URL),
    reason="raises a memory alarm: needs a RabbitMQ node of its own "
    "(CONVEYOR_TEST_ALARM_NODE, CONVEYOR_TEST_ALARM_AMQP_URL), never a shared broker",
)
async def test_under_a_memory_alarm_publishes_time_out_and_readiness_says_blocked() -> None:
    """A resource alarm blocks every publishing connection: a publish must give up after
    publish_timeout (aio-pika waits for the unblock before its own timeout starts), and
    /health/ready must say so instead of staying green."""
    assert ALARM_NODE
    assert ALARM_AMQP_URL
    settings = Settings(amqp_url=ALARM_AMQP_URL)
    queue = WorkQueue(f"alarm.{uuid.uuid4().hex[:8]}", (0.2,), 5)
    broker = build_broker(settings)
    await broker.connect()
    connection = await aio_pika.connect(ALARM_AMQP_URL)
    alarm = ("rabbitmqctl", "-q", "-n", ALARM_NODE, "set_vm_memory_high_watermark")
    try:
        channel = await connection.channel()
        for declared in queue.retries():
            await channel.declare_queue(declared.name, durable=True, arguments=declared.arguments)
        [delivery] = await _deliveries(channel, 1, "m-1")
        router = FailureRouter(broker, queue, max_attempts=3, publish_timeout=1.0)
        check = broker_connection(broker)
        assert await check() is None
        subprocess.run([*alarm, "0.000001"], check=True)
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await router.retry_later(delivery, RuntimeError("x"))
            assert time.monotonic() - started < 5
            assert await check() == "connection blocked by the broker (resource alarm)"
        finally:
            subprocess.run([*alarm, "0.4"], check=True)
        await eventually(lambda: _is_none(check()), what="the connection unblocked")
    finally:
        for declared in queue.retries():
            with contextlib.suppress(Exception):
                await (await connection.channel()).queue_delete(declared.name)
        await connection.close()
        await broker.stop()


async def _is_none(value: Awaitable[Any]) -> bool:
    return await value is None


class SlowPublishingGateway(EventGateway):
    """The real gateway, each publish held up as a blocked broker would hold it."""

    delay = 1.5

    async def _publish(self, event: Any, position: int) -> None:
        await asyncio.sleep(self.delay)
        await super()._publish(event, position)


async def test_a_page_in_flight_longer_than_the_lease_keeps_the_lease(
    settings: Settings,
) -> None:
    """A page held up past the lease (a blocked broker) must not let a standby take over
    and publish the same page meanwhile: the lease is renewed while the page is in flight."""
    await _store_commands(settings, [CreateOrder("o-slow", "c")])
    settings = settings.model_copy(update={"gateway_lease_seconds": 0.5})
    event_store = await SqliteEventStore(settings.event_store).open()
    read_store = await open_read_store(settings)
    broker = build_broker(settings)
    await broker.connect()
    await declare_topology(settings, broker, commands=False, events=True)
    active = build_gateway(settings, broker, event_store, read_store)
    gateway = SlowPublishingGateway(
        event_store, broker, active._checkpoint, publish_timeout=settings.publish_timeout
    )
    standby = LeasedCheckpoint(read_store, GATEWAY_CHECKPOINT, "standby", ttl=0.5)
    stop = asyncio.Event()
    running = asyncio.create_task(gateway.run(stop))
    taken_over = []
    try:
        await eventually(lambda: gateway.active, what="the gateway active")
        while gateway.published == 0 and len(taken_over) < 50:
            taken_over.append(await standby.try_acquire())
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await broker.stop()
        await read_store.close()
        await event_store.close()
    assert not any(taken_over)  # the standby never got the lease...
    assert 10 <= len(taken_over) < 50  # ...while the page was in flight for 3 lease periods


async def test_a_channel_error_on_the_publishing_channel_sends_nothing_to_the_dlq(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    amqp_url: str,
) -> None:
    """Every publish of a process shares one channel: a channel-level error (here a publish
    to an exchange that does not exist) closes it under every outcome in flight. Those
    commands are applied; returned to their queue, they are answered as duplicates, never
    dead-lettered."""
    host = await start_worker(settings)
    assert host.broker is not None
    commands = [
        {"type": "CreateOrder", "command_id": f"ch-{n}", "order_id": f"ch-{n}", "customer_id": "c"}
        for n in range(300)
    ]
    reader = await SqliteEventStore(settings.event_store).open()
    try:
        sending = asyncio.create_task(publish_many(amqp_url, settings.command_queue, commands))
        await eventually(lambda: _at_least(reader, 20), what="the first commands applied")
        for _ in range(5):
            with contextlib.suppress(Exception):
                await host.broker.publish(b"x", exchange="conveyor.no-such-exchange", timeout=5)
            await asyncio.sleep(0.05)
        await sending
        await eventually(lambda: _at_least(reader, 300), within=60, what="every command")
    finally:
        await reader.close()
    assert await queue_depth(amqp_url, f"{settings.command_queue}.dlq") == 0


async def _at_least(store: SqliteEventStore, events: int) -> bool:
    return await store.head_position() >= events


async def test_requeues_for_transport_trouble_do_not_spend_the_brokers_delivery_limit(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    amqp_url: str,
) -> None:
    """A publish that cannot complete (here: every confirm outlasts the publish timeout) is
    transport trouble, never the message's fault. On RabbitMQ before 4.3 every requeue of a
    quorum-queue delivery counts toward x-delivery-limit, so answering the trouble with
    nack(requeue) dead-letters a healthy, already-applied command once the trouble has lasted
    `delivery_limit` rounds (20 by default: a few seconds of repeated channel errors)."""
    settings = settings.model_copy(update={"delivery_limit": 2, "publish_timeout": 1e-4})
    await start_worker(settings)
    body = {"type": "CreateOrder", "command_id": "t-1", "order_id": "o-t", "customer_id": "c"}
    await publish_many(amqp_url, settings.command_queue, [body])
    store = await SqliteEventStore(settings.event_store).open()
    try:
        await eventually(lambda: _at_least(store, 1), what="the command applied")
    finally:
        await store.close()
    await asyncio.sleep(2 * (settings.delivery_limit + 2))  # well past the delivery limit
    assert await queue_depth(amqp_url, f"{settings.command_queue}.dlq") == 0


class OneFailedRenewal:
    """The real read store, whose first checkpoint write while armed fails as SQLite's does
    when another writer holds the lock past the busy timeout: a transient fault."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def put(
        self, collection: str, doc_id: str, body: Any, *, expected_rev: int, where: Any = None
    ) -> int:
        if self.armed:
            self.armed = False
            raise sqlite3.OperationalError("database is locked")
        return int(
            await self._store.put(collection, doc_id, body, expected_rev=expected_rev, where=where)
        )


async def test_one_failed_renewal_during_a_page_neither_loses_the_lease_nor_the_page(
    settings: Settings,
) -> None:
    """A renewal that fails for a moment (a locked database) must not end the renewals for
    the rest of the page, letting the lease lapse mid-page so that a standby publishes the
    same page; nor may it throw away the page once it is confirmed."""
    await _store_commands(settings, [CreateOrder("o-flaky", "c")])
    settings = settings.model_copy(update={"gateway_lease_seconds": 0.5})
    event_store = await SqliteEventStore(settings.event_store).open()
    read_store = await open_read_store(settings)
    flaky = OneFailedRenewal(read_store)
    broker = build_broker(settings)
    await broker.connect()
    await declare_topology(settings, broker, commands=False, events=True)
    checkpoint = LeasedCheckpoint(flaky, GATEWAY_CHECKPOINT, "active", ttl=0.5)  # type: ignore[arg-type]
    gateway = SlowPublishingGateway(
        event_store, broker, checkpoint, publish_timeout=settings.publish_timeout
    )
    standby = LeasedCheckpoint(read_store, GATEWAY_CHECKPOINT, "standby", ttl=0.5)
    stop = asyncio.Event()
    running = asyncio.create_task(gateway.run(stop))
    taken_over = []
    try:
        await eventually(lambda: gateway.active, what="the gateway active")
        flaky.armed = True  # the page is in flight: its first renewal fails
        while gateway.published == 0 and len(taken_over) < 50:
            taken_over.append(await standby.try_acquire())
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await broker.stop()
        await read_store.close()
        await event_store.close()
    assert not flaky.armed  # the renewal did fail once
    assert not any(taken_over)  # the standby never got the lease
    assert gateway.published == 1  # and the confirmed page was saved, not dropped


@pytest.mark.timeout(240)
async def test_connections_dropped_mid_load_lose_and_double_nothing(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    amqp_url: str,
    test_vhost: str,
) -> None:
    """The broker drops the worker's connection twice while commands, outcomes, events and
    projection writes are in flight: publishes die unconfirmed and deliveries unacked on the
    old channels, aio-pika reconnects. Every command is applied exactly once, nothing is
    dead-lettered and the read models end equal to a rebuild."""
    settings = settings.model_copy(update={"reconcile_settle_seconds": 0.5})
    COMMANDS = 2000
    commands = [
        {
            "type": "CreateOrder",
            "command_id": f"d-{n}",
            "order_id": f"d-{n}",
            "customer_id": f"c{n % 50}",
        }
        for n in range(COMMANDS)
    ]
    await start_worker(settings, ("commands", "gateway", "projections"))
    reader = await SqliteEventStore(settings.event_store).open()
    try:
        async with ManagementApi(MANAGEMENT_URL, test_vhost) as api:
            dropped: set[str] = set()
            drops_under_load = 0
            loading: asyncio.Task[None] | None = None
            for _ in range(2):  # the second drop right after the worker has reconnected

                async def new_connections() -> list[str]:
                    names = {c["name"] for c in await api.connections()} - dropped
                    return sorted(names)

                if loading is not None:
                    await loading  # its connection must not be taken for the worker's
                listed = await eventually(new_connections, within=30, what="a new connection")
                if not dropped:
                    # The load starts once the worker's connection is listed: the management
                    # API lists it seconds late, by when a fast worker would be done.
                    # In the background: the worker applies as fast as they are confirmed.
                    loading = asyncio.create_task(
                        publish_many(amqp_url, settings.command_queue, commands)
                    )
                    await eventually(lambda: _at_least(reader, COMMANDS // 10), what="load")
                if await reader.head_position() >= COMMANDS:
                    break  # a fast machine finished before the second drop: nothing to drop
                drops_under_load += 1
                for name in listed:  # the vhost is this test's: the worker's only
                    await api.close_connection(name, "test: connection dropped")
                dropped.update(listed)
            assert drops_under_load >= 1  # the first drop always lands under load
        await eventually(lambda: _at_least(reader, COMMANDS), within=90, what="every command")
        await read_models_settle(settings, within=90)
        events = await reader.read_all(after=0, limit=10_000)
    finally:
        await reader.close()
    order_events = [e for e in events if e.stream_id.startswith("order-")]
    assert len(order_events) == COMMANDS  # each command applied once
    for queue in [settings.command_queue] + [
        f"{settings.projection_queue_prefix}.{p.name}" for p in ORDER_PROJECTIONS
    ]:
        assert await queue_depth(amqp_url, f"{queue}.dlq") == 0
