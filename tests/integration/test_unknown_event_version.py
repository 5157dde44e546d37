"""A command on an order whose stream holds an event of a schema version this code does
not know (written by a newer deployment): never folded as if it were current. The command
fails as transient — round the retry ladder, then the DLQ with the reason — and is neither
rejected nor applied."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest

from conveyor.aggregates.orders import ORDERS
from conveyor.embedded.sqlite_library import sqlite3
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.settings import Settings
from messaging import failures
from tests.rabbit import Management, eventually, publish
from workers.host import WorkerHost

pytestmark = pytest.mark.rabbitmq


def command(type_: str, order_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "command_id": str(uuid.uuid4()), "order_id": order_id, **fields}


def write_future_event(path: str, order_id: str, version: int) -> str:
    event_id = str(uuid.uuid4())
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute(
            "INSERT INTO events (event_id, stream_id, version, type, schema_version, data,"
            " metadata, occurred_at) VALUES (?, ?, ?, 'ItemAdded', 3, ?, '{}', ?)",
            (
                event_id,
                ORDERS.stream(order_id),
                version,
                json.dumps({"sku": "SKU-9", "quantity": 1, "price": {"amount": "1", "in": "EUR"}}),
                "2026-12-02T00:00:00.000000Z",
            ),
        )
    finally:
        connection.close()
    return event_id


async def test_a_command_meeting_a_future_event_goes_round_the_retry_ladder_to_the_dlq(
    settings: Settings,
    start_worker: Callable[[Settings], Awaitable[WorkerHost]],
    reader: SqliteEventStore,
    amqp_url: str,
    management: Management,
    test_vhost: str,
) -> None:
    await start_worker(settings)  # max_attempts=3, delays 0.2s, 0.4s
    connection = await aio_pika.connect(amqp_url)
    outcomes: list[dict[str, Any]] = []
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind("conveyor.command-outcomes", routing_key="orders.command.#")

        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                outcomes.append(json.loads(message.body))

        await queue.consume(collect)
        create = command("CreateOrder", "o-future", customer_id="c")
        await publish(amqp_url, settings.command_queue, create)
        await eventually(lambda: _stream(reader, "o-future", 1), what="the order")
        future_id = write_future_event(settings.event_store, "o-future", 2)

        add = command("AddItem", "o-future", sku="SKU-1", quantity=1, unit_price="1.00")
        await publish(amqp_url, settings.command_queue, add, message_id="m-future")
        dead = await eventually(
            lambda: management.peek(test_vhost, f"{settings.command_queue}.dlq"),
            what="the dead-lettered command",
        )
        headers = dead[0]["properties"]["headers"]
        assert headers[failures.ATTEMPTS] == 3  # every attempt of the ladder was spent
        assert headers[failures.FAILURE_CLASS] == "transient"
        assert headers[failures.ERROR_TYPE] == "UnreadableStoredEvent"
        for part in (future_id, "'order-o-future'", "'ItemAdded'", "schema version 3"):
            assert part in headers[failures.ERROR_MESSAGE]
        assert json.loads(dead[0]["payload"]) == add

        stream = await reader.read_stream(ORDERS.stream("o-future"))
        assert [(e.version, e.schema_version) for e in stream] == [
            (1, 1),
            (2, 3),
        ]  # no event, no rejection marker
        assert [o["status"] for o in outcomes if o["command_id"] == add["command_id"]] == []
    finally:
        await connection.close()


async def _stream(reader: SqliteEventStore, order_id: str, count: int) -> bool:
    return len(await reader.read_stream(ORDERS.stream(order_id))) >= count
