"""Projection workers and read models against the real broker and SQLite: the read models
end exactly equal to a fresh fold of the event store, whatever the delivery did."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest

from conveyor.aggregates import AGGREGATES
from conveyor.bootstrap import open_read_store
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.projections import ORDER_PROJECTIONS, PROJECTIONS
from conveyor.readmodels.rebuild import project_in_memory, rebuild
from conveyor.settings import Settings
from messaging import failures
from messaging.customers import IntegrationMapper
from messaging.integration_events import encode
from tests.integration.test_gateway import store_orders
from tests.mongodb import READ_STORES, on_read_store
from tests.processes import start_conveyor
from tests.rabbit import Management, eventually, publish_many, queue_depth
from workers.host import WorkerHost

pytestmark = pytest.mark.rabbitmq

StartWorker = Callable[..., Awaitable[WorkerHost]]
VOLATILE = ("projected_at",)  # wall-clock time of the write: differs between runs by design


@pytest.fixture(params=READ_STORES)
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """Every test here runs against both read stores: SQLite, and MongoDB on the wire."""
    return on_read_store(settings, request)


def _stable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in VOLATILE}


async def read_models(settings: Settings) -> dict[str, dict[str, dict[str, Any]]]:
    """The documents of every projection's active collection, as stored."""
    store = await open_read_store(settings)
    try:
        collections = ProjectionCollections(store, cache_seconds=0)
        result = {}
        for projection in PROJECTIONS:
            active = await collections.active(projection.name)
            documents = await store.find(active.collection, limit=1_000_000)
            result[projection.name] = {d.id: _stable(d.body) for d in documents}
        return result
    finally:
        await store.close()


async def expected_read_models(settings: Settings) -> dict[str, dict[str, dict[str, Any]]]:
    store = await SqliteEventStore(settings.event_store).open()
    try:
        return {
            p.name: {k: _stable(v) for k, v in (await project_in_memory(p.name, store)).items()}
            for p in PROJECTIONS
        }
    finally:
        await store.close()


async def read_models_settle(settings: Settings, *, within: float = 60) -> None:
    """Wait until the read models equal a fold of the event store *as it is now*: the log
    is read again on every check, since commands published just before may still be being
    appended (reading it once made the wait flaky: read models that caught up with events
    stored after that read could never match it)."""

    async def equal() -> bool:
        expected = await expected_read_models(settings)
        return await read_models(settings) == expected

    try:
        await eventually(equal, within=within, interval=0.2, what="read models to match the log")
    except AssertionError:
        expected = await expected_read_models(settings)
        actual = await read_models(settings)
        for name in expected:
            missing = expected[name].keys() - actual[name].keys()
            extra = actual[name].keys() - expected[name].keys()
            wrong = [
                k
                for k in expected[name]
                if k in actual[name] and actual[name][k] != expected[name][k]
            ]
            print(name, "missing", sorted(missing)[:5], "extra", sorted(extra)[:5])
            print(name, "wrong", wrong[:5])
            for key in wrong[:2]:
                print(" expected", expected[name][key], "\n actual  ", actual[name][key])
        raise


async def _at_least(store: SqliteEventStore, events: int) -> bool:
    return await store.head_position() >= events


async def integration_events(settings: Settings) -> list[Any]:
    store = await SqliteEventStore(settings.event_store).open()
    try:
        directory = IntegrationMapper(store, AGGREGATES)
        return [await directory.integration_event(e) for e in await store.read_all(limit=100_000)]
    finally:
        await store.close()


async def publish_events(amqp_url: str, events: list[Any]) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange("conveyor.events", "topic", durable=True)
        for start in range(0, len(events), 200):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            encode(event),
                            message_id=str(event.event_id),
                            # as the gateway does: projections apply only its user's events
                            user_id=urlsplit(amqp_url).username or "guest",
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=event.routing_key,
                    )
                    for event in events[start : start + 200]
                )
            )


async def test_commands_flow_into_all_three_read_models(
    settings: Settings, start_worker: StartWorker, amqp_url: str
) -> None:
    await start_worker(settings, ("commands", "gateway", "projections"))
    # Each step waits for the previous one: commands of one order sent together may be
    # applied in any order (competing consumers), and AddItem before CreateOrder is rejected.
    steps = [
        [
            {
                "type": "CreateOrder",
                "command_id": f"flow-{n}-1",
                "order_id": f"flow-{n}",
                "customer_id": f"c-{n % 3}",
            }
            for n in range(20)
        ],
        [
            {
                "type": "AddItem",
                "command_id": f"flow-{n}-2",
                "order_id": f"flow-{n}",
                "sku": "A",
                "quantity": 3,
                "unit_price": "1.10",
            }
            for n in range(20)
        ],
        [
            {"type": "ConfirmOrder", "command_id": f"flow-{n}-3", "order_id": f"flow-{n}"}
            for n in range(0, 20, 2)
        ],
    ]
    reader = await SqliteEventStore(settings.event_store).open()
    try:
        applied = 0
        for step in steps:
            await publish_many(amqp_url, settings.command_queue, step)
            applied += len(step)
            await eventually(lambda n=applied: _at_least(reader, n), what=f"{applied} events")
    finally:
        await reader.close()
    await read_models_settle(settings)

    models = await read_models(settings)
    summary = models["order_summary"]["flow-0"]
    assert summary["status"] == "confirmed"
    assert summary["total"] == "3.30"
    assert summary["items"] == [
        {"sku": "A", "quantity": 3, "unit_price": "1.10", "subtotal": "3.30"}
    ]
    pending = [d for d in models["active_orders"].values() if d["status"] == "pending"]
    assert sorted(d["order_id"] for d in pending) == sorted(f"flow-{n}" for n in range(1, 20, 2))
    # one customer_history document per order, indexed by customer
    customer = [d for d in models["customer_history"].values() if d["customer_id"] == "c-0"]
    assert len(customer) == 7


async def test_duplicates_and_reordering_never_change_the_final_read_models(
    settings: Settings, start_worker: StartWorker, amqp_url: str
) -> None:
    settings = settings.model_copy(update={"max_attempts": 20, "retry_delays": (0.1, 0.2)})
    await store_orders(settings.event_store, 30)
    events = await integration_events(settings)
    rng = random.Random(7)
    deliveries = [e for e in events for _ in range(rng.choice((1, 1, 2, 3)))]
    rng.shuffle(deliveries)  # out of order across and within orders, with duplicates
    await start_worker(settings, ("projections",))
    await publish_events(amqp_url, deliveries)
    await read_models_settle(settings)
    for projection in ORDER_PROJECTIONS:
        queue = f"{settings.projection_queue_prefix}.{projection.name}"
        assert await queue_depth(amqp_url, f"{queue}.dlq") == 0


async def test_a_poison_event_is_dead_lettered_and_the_others_flow(
    settings: Settings,
    start_worker: StartWorker,
    amqp_url: str,
    management: Management,
    test_vhost: str,
) -> None:
    await store_orders(settings.event_store, 10)
    events = await integration_events(settings)
    await start_worker(settings, ("projections",))  # max_attempts=3, delays 0.2s/0.4s
    # an event for an order whose creation never comes: a gap that never closes
    later = next(e for e in events if e.version > 1)
    orphan = later.model_copy(update={"order_id": "ghost", "event_id": uuid.uuid4()})
    await publish_events(amqp_url, [orphan, *events])
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange("conveyor.events")
        await exchange.publish(
            aio_pika.Message(
                b"{not json", message_id="junk", user_id=urlsplit(amqp_url).username or "guest"
            ),
            routing_key="orders.created",
        )
    await read_models_settle(settings)

    for projection in ORDER_PROJECTIONS:
        dlq = f"{settings.projection_queue_prefix}.{projection.name}.dlq"
        dead = await eventually(
            lambda dlq=dlq: (
                len(management.peek(test_vhost, dlq)) == 2 and management.peek(test_vhost, dlq)
            ),
            within=30,
            what=f"two dead letters in {dlq}",
        )
        by_id = {
            m["properties"]["headers"][failures.ORIGINAL_MESSAGE_ID]: m["properties"]["headers"]
            for m in dead
        }
        assert by_id["junk"][failures.ERROR_TYPE] == "InvalidIntegrationEvent"
        assert by_id["junk"][failures.ATTEMPTS] == 1
        ghost = by_id[str(orphan.event_id)]
        assert ghost[failures.ERROR_TYPE] == "ProjectionGap"
        assert ghost[failures.ATTEMPTS] == 3
        assert "ghost" in ghost[failures.ERROR_MESSAGE]


@pytest.mark.slow
async def test_a_projection_worker_killed_mid_stream_leaves_exact_read_models(
    settings: Settings, amqp_url: str, tmp_path: Path
) -> None:
    await store_orders(settings.event_store, 300)
    events = await integration_events(settings)

    def start() -> subprocess.Popen[bytes]:
        return start_conveyor(
            settings,
            "projections",
            tmp_path / "projections.log",
            CONVEYOR_RETRY_DELAYS="0.2,0.5",
            CONVEYOR_MAX_ATTEMPTS="20",
        )

    first = start()
    try:
        await eventually(
            lambda: "worker started" in (tmp_path / "projections.log").read_text(), within=30
        )
        await publish_events(amqp_url, events)
        summary_queue = f"{settings.projection_queue_prefix}.order_summary"

        async def some_progress() -> bool:
            return await queue_depth(amqp_url, summary_queue) < len(events) * 0.8

        await eventually(some_progress, within=60)
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = start()
        try:
            await read_models_settle(settings, within=120)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()


async def test_a_rebuild_during_live_traffic_switches_without_losing_updates(
    settings: Settings, start_worker: StartWorker, amqp_url: str
) -> None:
    settings = settings.model_copy(update={"max_attempts": 20, "retry_delays": (0.1, 0.3)})
    await store_orders(settings.event_store, 200)
    host = await start_worker(settings, ("commands", "gateway", "projections"))
    assert host.store is not None
    assert host.read_store is not None

    async def traffic() -> None:
        for n in range(40):
            order_id = f"live-{n}"
            await publish_many(
                amqp_url,
                settings.command_queue,
                [
                    {
                        "type": "CreateOrder",
                        "command_id": f"{order_id}-c",
                        "order_id": order_id,
                        "customer_id": "c-live",
                    },
                ],
            )
            await asyncio.sleep(0.02)
            await publish_many(
                amqp_url,
                settings.command_queue,
                [
                    {
                        "type": "AddItem",
                        "command_id": f"{order_id}-a",
                        "order_id": order_id,
                        "sku": "S",
                        "quantity": 1,
                        "unit_price": "2.00",
                    },
                ],
            )

    collections = ProjectionCollections(host.read_store)
    traffic_task = asyncio.create_task(traffic())
    await asyncio.sleep(0.3)
    report = await rebuild("order_summary", host.store, host.read_store, collections)
    await traffic_task
    assert report.collection == "order_summary_v2"
    assert report.events >= 1000
    assert (await collections.read("order_summary")).collection == "order_summary_v2"
    await read_models_settle(settings)
    models = await read_models(settings)
    assert len(models["order_summary"]) == 240
