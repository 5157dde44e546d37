"""A store away for longer than the retry ladder: consumers pause instead of dead-lettering.

Against the real RabbitMQ and real SQLite files, locked by another connection (what a
failover, an upgrade or another process holding the file looks like to a worker). The
test settings' ladder (3 attempts, 0.2 s and 0.4 s apart, 0.2 s busy timeout) is spent in
about 1.5 s; the outages here last several times that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from prometheus_client import REGISTRY

from conveyor.embedded.sqlite_library import sqlite3
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.readmodels.projection_consumer import ProjectionConsumer
from conveyor.readmodels.projections import ORDER_PROJECTIONS
from conveyor.settings import Settings
from messaging import failures
from tests.integration.test_command_worker import DatabaseLock, command, stream_of
from tests.integration.test_projections import read_models_settle
from tests.rabbit import Management, eventually, publish_many, queue_depth
from workers.host import WorkerHost

pytestmark = pytest.mark.rabbitmq

StartWorker = Callable[..., Awaitable[WorkerHost]]
OUTAGE_SECONDS = 4.0


def outage_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"outage_probe_first_delay": 0.1, "outage_probe_max_delay": 0.5}
    )


def paused_gauge(store: str) -> float | None:
    return REGISTRY.get_sample_value("conveyor_consumers_paused", {"store": store})


async def queue_state(amqp_url: str, queue: str) -> int:
    """Ready messages, straight from the broker."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


async def all_applied(reader: SqliteEventStore, order_ids: list[str]) -> bool:
    streams = await asyncio.gather(*(stream_of(reader, order_id) for order_id in order_ids))
    return all(len(events) == 1 for events in streams)


@pytest.mark.parametrize(
    "delivery_limit",
    [20, 2],
    ids=["handed-back-by-requeue", "handed-back-as-fresh-copies"],
)
async def test_commands_wait_out_an_event_store_outage_longer_than_the_retry_ladder(
    settings: Settings,
    start_worker: StartWorker,
    reader: SqliteEventStore,
    amqp_url: str,
    delivery_limit: int,
) -> None:
    """With a delivery limit of 2 a requeue would already count half of it: deliveries go
    back as fresh copies instead (messaging/consumer.py `_hand_back`)."""
    settings = outage_settings(settings).model_copy(update={"delivery_limit": delivery_limit})
    host = await start_worker(settings)
    dlq = f"{settings.command_queue}.dlq"
    orders = [f"o-outage-{n}" for n in range(30)]
    lock = DatabaseLock(settings.event_store)
    try:
        await publish_many(
            amqp_url,
            settings.command_queue,
            [command("CreateOrder", order_id, customer_id="c") for order_id in orders],
        )
        await asyncio.sleep(OUTAGE_SECONDS)  # the ladder fits into this several times over
        assert await queue_depth(amqp_url, dlq) == 0, "dead-lettered during the outage"
        for order_id in orders:
            assert await stream_of(reader, order_id) == []

        readiness = await host.readiness()
        assert not readiness.ready
        assert "event_store unavailable" in readiness.checks["paused:event_store"]
        assert "locked" in readiness.checks["paused:event_store"]
        assert paused_gauge("event_store") == 1
        retried = REGISTRY.get_sample_value(
            "conveyor_messages_retried_total",
            {"queue": settings.command_queue, "error_type": "EventStoreUnavailable"},
        )
        assert not retried, "an outage spent attempts"
        # Not consuming, and every delivery but the probe's canary back on the queue,
        # staying there (no churn of deliveries handed back again and again).
        assert readiness.checks[f"consumer:{settings.command_queue}"] == "not consuming"
        assert await queue_state(amqp_url, settings.command_queue) == len(orders) - 1
        handed_back = host.consumers[0].handed_back
        await asyncio.sleep(1.0)
        assert host.consumers[0].handed_back == handed_back
    finally:
        lock.release()

    await eventually(lambda: all_applied(reader, orders), within=30, what="all 30 applied")
    assert await queue_depth(amqp_url, dlq) == 0
    await eventually(lambda: _ready(host), what="ready again")
    assert paused_gauge("event_store") == 0


async def _queue_adds_unconsumed(
    host: WorkerHost, settings: Settings, amqp_url: str, creates: list[dict[str, Any]]
) -> tuple[list[ProjectionConsumer], list[dict[str, Any]]]:
    """An AddItem per order, published by the gateway onto projection queues nobody
    consumes for now. The gateway keeps its lease in the read store and publishes nothing
    it cannot fence with it: the events must be queued before the read store goes away."""
    projectors = [
        c
        for c in host.consumers
        if isinstance(c, ProjectionConsumer) and c.applier.projection in ORDER_PROJECTIONS
    ]
    for projector in projectors:
        await projector.stop_consuming()
    adds = [
        command("AddItem", c["order_id"], sku="SKU-1", quantity=1, unit_price="2.50")
        for c in creates
    ]
    await publish_many(amqp_url, settings.command_queue, adds)
    for projector in projectors:
        await eventually(
            lambda queue=projector.queue.name: _depth_is(amqp_url, queue, len(adds)),
            what=f"the events on {projector.queue.name}",
        )
    return projectors, adds


async def _depth_is(amqp_url: str, queue: str, count: int) -> bool:
    return await queue_depth(amqp_url, queue) >= count


async def _ready(host: WorkerHost) -> bool:
    return (await host.readiness()).ready


async def test_projections_wait_out_a_read_store_outage_longer_than_the_retry_ladder(
    settings: Settings, start_worker: StartWorker, amqp_url: str
) -> None:
    settings = outage_settings(settings)
    host = await start_worker(settings, ("commands", "gateway", "projections"))
    creates = [command("CreateOrder", f"o-rs-{n}", customer_id=f"c-{n % 3}") for n in range(20)]
    await publish_many(amqp_url, settings.command_queue, creates)
    reader = await SqliteEventStore(settings.event_store).open()
    try:
        await eventually(lambda: all_applied(reader, [c["order_id"] for c in creates]))
    finally:
        await reader.close()
    projectors, _ = await _queue_adds_unconsumed(host, settings, amqp_url, creates)
    lock = DatabaseLock(settings.read_store)
    try:
        for projector in projectors:
            await projector.resume_consuming()
        await asyncio.sleep(OUTAGE_SECONDS)
        for projection in (p.name for p in ORDER_PROJECTIONS):
            dlq = f"{settings.projection_queue_prefix}.{projection}.dlq"
            assert await queue_depth(amqp_url, dlq) == 0, f"{projection} dead-lettered"
        readiness = await host.readiness()
        assert "read_store unavailable" in readiness.checks["paused:read_store"]
    finally:
        lock.release()
    await read_models_settle(settings, within=60)
    for projection in (p.name for p in ORDER_PROJECTIONS):
        dlq = f"{settings.projection_queue_prefix}.{projection}.dlq"
        assert await queue_depth(amqp_url, dlq) == 0


async def test_a_message_failing_by_itself_still_spends_the_ladder_while_others_flow(
    settings: Settings,
    start_worker: StartWorker,
    reader: SqliteEventStore,
    amqp_url: str,
    management: Management,
    test_vhost: str,
) -> None:
    """Only failures of the message itself spend attempts: a command the store refuses
    every time (a trigger here) reaches the DLQ after the ladder; the store is up, so
    nothing pauses and the other commands are applied."""
    settings = outage_settings(settings).model_copy(update={"conflict_attempts": 1})
    connection = sqlite3.connect(settings.event_store)
    await start_worker(settings)
    connection.execute(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON events "
        "WHEN NEW.stream_id LIKE '%o-poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
    )
    connection.commit()
    connection.close()
    poison = command("CreateOrder", "o-poison", customer_id="c")
    healthy = [command("CreateOrder", f"o-fine-{n}", customer_id="c") for n in range(5)]
    await publish_many(amqp_url, settings.command_queue, [poison, *healthy])
    dead = await eventually(
        lambda: management.peek(test_vhost, f"{settings.command_queue}.dlq"), what="the DLQ"
    )
    headers = dead[0]["properties"]["headers"]
    assert headers[failures.ATTEMPTS] == settings.max_attempts
    assert headers[failures.FAILURE_CLASS] == "transient"
    await eventually(lambda: all_applied(reader, [c["order_id"] for c in healthy]))
    assert paused_gauge("event_store") == 0


async def test_projections_wait_out_a_mongodb_read_store_outage(
    settings: Settings, start_worker: StartWorker, amqp_url: str, tmp_path: Path
) -> None:
    """The MongoDB wire-protocol test server (SecantusDB) stopped for longer than the
    ladder, then started again on its data: nothing dead-lettered, everything applied."""
    secantus = pytest.importorskip("secantus")
    server = secantus.SecantusDBServer(storage_path=str(tmp_path / "mongo"), port=0)
    await asyncio.to_thread(server.start)
    port = int(server.uri.rstrip("/").rsplit(":", 1)[1])
    url = f"mongodb://127.0.0.1:{port}/conveyor?timeoutMS=300"
    settings = outage_settings(settings).model_copy(update={"read_store": url})
    try:
        host = await start_worker(settings, ("commands", "gateway", "projections"))
        creates = [command("CreateOrder", f"o-m-{n}", customer_id=f"c-{n % 3}") for n in range(10)]
        await publish_many(amqp_url, settings.command_queue, creates)
        reader = await SqliteEventStore(settings.event_store).open()
        try:  # settled means equal to *all* of them, not to the ones stored so far
            await eventually(lambda: all_applied(reader, [c["order_id"] for c in creates]))
        finally:
            await reader.close()
        await read_models_settle(settings, within=60)

        projectors, _ = await _queue_adds_unconsumed(host, settings, amqp_url, creates)
        await asyncio.to_thread(server.stop)
        for projector in projectors:
            await projector.resume_consuming()
        await asyncio.sleep(OUTAGE_SECONDS)
        for projection in (p.name for p in ORDER_PROJECTIONS):
            dlq = f"{settings.projection_queue_prefix}.{projection}.dlq"
            assert await queue_depth(amqp_url, dlq) == 0, f"{projection} dead-lettered"
        readiness = await host.readiness()
        assert "read_store unavailable" in readiness.checks["paused:read_store"]

        server = secantus.SecantusDBServer(storage_path=str(tmp_path / "mongo"), port=port)
        await asyncio.to_thread(server.start)
        await read_models_settle(settings, within=60)
        for projection in (p.name for p in ORDER_PROJECTIONS):
            dlq = f"{settings.projection_queue_prefix}.{projection}.dlq"
            assert await queue_depth(amqp_url, dlq) == 0
    finally:
        await asyncio.to_thread(server.stop)
