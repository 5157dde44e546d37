"""A real event log written before ItemAdded had a currency (tests/fixtures/order-log-v1.*,
made by `conveyor demo` at edb6686) is still read whole by today's code: it loads (upcast
to ItemAdded v2 in the shop's default currency, the stored file untouched), folds, answers
temporal queries as it did then, rebuilds every read model exactly as then, takes new
commands, and is published by the gateway under the same contract version."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from conveyor.aggregates.orders import ORDERS
from conveyor.application.commands import CommandEnvelope, CommandHandler
from conveyor.application.history import aggregate_history
from conveyor.bootstrap import configured_aggregates, open_event_store
from conveyor.embedded.sqlite_library import sqlite3
from conveyor.eventstore.port import EventStore
from conveyor.queries.service import history_as_json
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.projections import PROJECTIONS
from conveyor.readmodels.rebuild import RebuildError, rebuild_all
from conveyor.readmodels.sqlite import SqliteReadModelStore
from conveyor.settings import Settings
from domain.orders.commands import AddItem
from domain.orders.order import OrderStatus
from tests.rabbit import eventually
from workers.host import WorkerHost

FIXTURES = Path(__file__).parent.parent / "fixtures"
EXPORTED: list[dict[str, Any]] = json.loads((FIXTURES / "order-log-v1.events.json").read_text())
READ_MODELS = json.loads((FIXTURES / "order-log-v1.read-models.json").read_text())
HISTORY = json.loads((FIXTURES / "order-log-v1.history.json").read_text())


def old_log(tmp_path: Path) -> Path:
    path = tmp_path / "events.db"
    shutil.copyfile(FIXTURES / "order-log-v1.events.db", path)
    return path


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    opened = await open_event_store(Settings(event_store=str(old_log(tmp_path))))
    yield opened
    await opened.close()


def as_upcast(event: dict[str, Any], currency: str = "EUR") -> dict[str, Any]:
    """What the recorded v1 event must read as today."""
    event = copy.deepcopy(event)
    if event["type"] == "ItemAdded":
        assert event["schema_version"] == 1
        event["schema_version"] = 2
        event["data"]["currency"] = currency
    return event


def test_the_fixture_is_the_v1_log_it_claims_to_be() -> None:
    types = {e["type"] for e in EXPORTED}
    assert {"OrderCreated", "ItemAdded", "ItemRemoved", "OrderConfirmed"} <= types
    assert {"OrderCancelled", "CommandRejected"} <= types
    assert {e["schema_version"] for e in EXPORTED} == {1}
    assert all("currency" not in e["data"] for e in EXPORTED)


async def test_the_old_log_loads_upcast_and_the_file_keeps_what_was_written(
    tmp_path: Path,
) -> None:
    path = old_log(tmp_path)
    for currency in ("EUR", "USD"):
        store = await open_event_store(Settings(event_store=str(path), default_currency=currency))
        try:
            log = await store.read_all(limit=10_000)
        finally:
            await store.close()
        read = [
            {
                "event_id": str(e.event_id),
                "stream_id": e.stream_id,
                "version": e.version,
                "position": e.position,
                "type": e.type,
                "schema_version": e.schema_version,
                "data": dict(e.data),
                "occurred_at": e.occurred_at.isoformat(),
                "metadata": dict(e.metadata),
            }
            for e in log
        ]
        assert read == [as_upcast(e, currency) for e in EXPORTED]
    raw = sqlite3.connect(path)
    try:
        stored = raw.execute(
            "SELECT schema_version, data FROM events WHERE type = 'ItemAdded'"
        ).fetchall()
    finally:
        raw.close()
    assert {version for version, _ in stored} == {1}
    assert all("currency" not in json.loads(data) for _, data in stored)


async def test_every_order_folds_and_answers_temporal_queries_as_before(
    store: EventStore,
) -> None:
    assert len(HISTORY) == 40
    for order_id, recorded in HISTORY.items():
        now = await aggregate_history(store, ORDERS, order_id)
        assert now.state.currency in (None, "EUR")
        expected = copy.deepcopy(recorded["now"])
        expected["events"] = [as_upcast(e) for e in expected["events"]]
        assert history_as_json(now) == expected, order_id
        if "as_of_version_2" in recorded:
            then = await aggregate_history(store, ORDERS, order_id, as_of_version=2)
            expected = copy.deepcopy(recorded["as_of_version_2"])
            expected["events"] = [as_upcast(e) for e in expected["events"]]
            assert history_as_json(then) == expected, order_id


async def test_a_rebuild_of_the_old_log_writes_every_read_model_as_before(
    store: EventStore, tmp_path: Path
) -> None:
    read_store = await SqliteReadModelStore(tmp_path / "readmodels.db").open()
    try:
        collections = ProjectionCollections(read_store, cache_seconds=0)
        await rebuild_all(store, read_store, collections)
        for projection in PROJECTIONS:
            active = await collections.active(projection.name)
            documents = await read_store.find(active.collection, limit=1_000_000)
            actual = json.loads(json.dumps({d.id: d.body for d in documents}, default=str))
            # A read model newer than the log (stock_levels) has nothing to show for it.
            assert actual == READ_MODELS.get(projection.name, {}), projection.name
    finally:
        await read_store.close()


async def test_old_orders_take_new_commands_in_their_currency(store: EventStore) -> None:
    pending = [
        order_id
        for order_id in HISTORY
        if (await aggregate_history(store, ORDERS, order_id)).state.status is OrderStatus.PENDING
        and (await aggregate_history(store, ORDERS, order_id)).state.lines
    ]
    assert pending, "the fixture has a pending order with items"
    order_id = pending[0]
    handler = CommandHandler(store, configured_aggregates(Settings()))
    in_dollars = AddItem(order_id, "NEW-SKU", 1, Decimal("1.00"), "USD")
    refused = await handler.handle(CommandEnvelope(in_dollars, "cmd-usd", "cmd-usd", "cmd-usd"))
    assert refused.status == "rejected"
    assert refused.rule == "currency_mismatch"
    same = AddItem(order_id, "NEW-SKU", 1, Decimal("1.00"))
    accepted = await handler.handle(CommandEnvelope(same, "cmd-eur", "cmd-eur", "cmd-eur"))
    assert accepted.status == "accepted"
    last = (await store.read_stream(f"order-{order_id}"))[-1]
    assert last.schema_version == 2
    assert last.data["currency"] == "EUR"


async def test_a_rebuild_stops_at_an_event_of_an_unknown_version_naming_it(
    tmp_path: Path,
) -> None:
    """A future ItemAdded (schema version 3, written by a newer deployment) in the log: the
    rebuild stops with RebuildError naming the event, and readers stay where they were."""
    path = old_log(tmp_path)
    raw = sqlite3.connect(path)
    try:
        raw.execute(
            "INSERT INTO events (event_id, stream_id, version, type, schema_version, data,"
            " metadata, occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "00000000-0000-4000-8000-000000000003",
                "order-from-the-future",
                1,
                "ItemAdded",
                3,
                json.dumps({"price": {}}),
                "{}",
                "2026-12-02T00:00:00.000000Z",
            ),
        )
        raw.commit()
    finally:
        raw.close()
    store = await open_event_store(Settings(event_store=str(path)))
    read_store = await SqliteReadModelStore(tmp_path / "readmodels.db").open()
    try:
        collections = ProjectionCollections(read_store, cache_seconds=0)
        before = {p.name: (await collections.active(p.name)).collection for p in PROJECTIONS}
        with pytest.raises(RebuildError) as caught:
            await rebuild_all(store, read_store, collections)
        message = str(caught.value)
        for part in (
            "00000000-0000-4000-8000-000000000003",
            "stream 'order-from-the-future'",
            "version 1,",
            "type 'ItemAdded'",
            "schema version 3",
            "knows versions up to 2",
        ):
            assert part in message
        after = {p.name: (await collections.active(p.name)).collection for p in PROJECTIONS}
        assert after == before
    finally:
        await read_store.close()
        await store.close()


@pytest.mark.rabbitmq
async def test_the_gateway_publishes_the_old_log_as_before_with_the_currency_added(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    amqp_url: str,
    tmp_path: Path,
) -> None:
    """Same contract version (1), routing keys, AMQP type and message ids as recorded from
    the old code; each ItemAdded's data gains `currency` — the default one — and nothing
    else changes."""
    recorded = json.loads((FIXTURES / "order-log-v1.integration-events.json").read_text())
    shutil.copyfile(FIXTURES / "order-log-v1.events.db", settings.event_store)
    connection = await aio_pika.connect(amqp_url)
    published: list[dict[str, Any]] = []
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("conveyor.events", "topic", durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="orders.#")

        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                published.append(
                    {
                        "routing_key": message.routing_key,
                        "type": message.type,
                        "message_id": message.message_id,
                        "body": json.loads(message.body),
                    }
                )

        await queue.consume(collect)
        await start_worker(settings, ("gateway",))
        await eventually(lambda: _at_least(published, len(recorded)), within=30, what="every event")
        await asyncio.sleep(0.3)
    finally:
        await connection.close()
    expected = copy.deepcopy(recorded)
    for message in expected:
        if message["type"] == "ItemAdded":
            message["body"]["data"]["currency"] = "EUR"
    published.sort(key=lambda m: m["body"]["event_id"])
    assert published == expected
    assert {m["body"]["schema_version"] for m in published} == {1}


async def _at_least(items: list[Any], count: int) -> bool:
    return len(items) >= count
