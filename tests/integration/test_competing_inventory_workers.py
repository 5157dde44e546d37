"""Competing inventory workers never oversell: two `conveyor run --only commands` processes
consume `inventory.commands` and reserve, commit and release the same few SKUs for many
orders at once. Optimistic concurrency on each SKU's stream is all that stands between them;
afterwards the store's own history must keep the books for every SKU."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.aggregates import AGGREGATES
from conveyor.application.aggregates import is_marker
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.settings import Settings
from tests.integration.test_worker_processes import WorkerProcesses
from tests.rabbit import eventually, publish_many, queue_depth

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

INVENTORY = AGGREGATES.named("inventory")
QUEUE = INVENTORY.command_queue
SKUS = ["SKU-A", "SKU-B", "SKU-C"]
STOCK = 60  # per SKU; the orders below ask for about twice that


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcesses]:
    processes = WorkerProcesses(settings, tmp_path)
    yield processes
    processes.stop_all()


def cmd(type_: str, sku: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "command_id": str(uuid.uuid4()), "sku": sku, **fields}


async def inventory_events(store: SqliteEventStore) -> list[Any]:
    events: list[Any] = []
    position = 0
    while page := await store.read_all(after=position, limit=5000):
        events += [e for e in page if INVENTORY.owns(e.stream_id)]
        position = page[-1].position
    return events


async def command_ids_applied(store: SqliteEventStore, count: int) -> bool:
    ids = {e.metadata["command_id"] for e in await inventory_events(store)}
    return len(ids) >= count


def check_books(sku: str, stream: list[Any]) -> dict[str, int]:
    """Walk one SKU's history event by event: the invariants hold after every event, and
    the counters kept here agree with the aggregate's own fold."""
    received = reserved = committed = 0
    open_reservations: dict[str, int] = {}
    refused = 0
    for event in stream:
        if is_marker(event):
            continue
        data = event.data
        match event.type:
            case "StockReceived":
                received += data["quantity"]
            case "StockReserved":
                assert data["order_id"] not in open_reservations, (sku, data)  # one per order
                open_reservations[data["order_id"]] = data["quantity"]
                reserved += data["quantity"]
            case "ReservationRefused":
                refused += 1
                assert data["available"] == received - committed - reserved, (sku, data)
                assert data["requested"] > data["available"]
            case "ReservationReleased":
                assert open_reservations.pop(data["order_id"]) == data["quantity"]
                reserved -= data["quantity"]
            case "ReservationCommitted":
                assert open_reservations.pop(data["order_id"]) == data["quantity"]
                reserved -= data["quantity"]
                committed += data["quantity"]
        on_hand = received - committed
        assert on_hand - reserved >= 0, f"{sku} oversold at version {event.version}"
        assert reserved + committed <= received
    state = INVENTORY.fold(sku, stream)
    assert (state.on_hand, state.reserved, state.available) == (
        received - committed,
        reserved,
        received - committed - reserved,
    )
    assert dict(state.reservations) == open_reservations
    assert (state.received_total, state.committed_total) == (received, committed)
    return {"refused": refused, "reservations": len(open_reservations), "committed": committed}


async def test_two_inventory_workers_reserving_the_same_skus_never_oversell(
    settings: Settings, workers: WorkerProcesses, reader: SqliteEventStore, amqp_url: str
) -> None:
    first, second = workers.start(), workers.start()
    await workers.started(first)
    await workers.started(second)
    rng = random.Random(7)

    stock = [cmd("ReceiveStock", sku, quantity=STOCK) for sku in SKUS]
    await publish_many(amqp_url, QUEUE, stock)
    await eventually(lambda: command_ids_applied(reader, len(stock)), what="stock received")

    # Phase 1: 60 orders reserve 1-3 units of every SKU; a third of them ask twice (a second
    # command), and some commands are delivered twice (the same command id).
    orders = [f"o-{n}" for n in range(60)]
    reserves = [
        cmd("ReserveStock", sku, order_id=order, quantity=rng.randint(1, 3))
        for order in orders
        for sku in SKUS
    ]
    reserves += [
        cmd("ReserveStock", sku, order_id=order, quantity=1)
        for order in orders[::3]
        for sku in SKUS
    ]
    redelivered = rng.sample(reserves, 30)
    rng.shuffle(reserves)
    await publish_many(amqp_url, QUEUE, reserves + redelivered)

    # Phase 2, racing phase 1's tail: half the orders ship, the other half give up, while
    # 40 more orders arrive; each SKU gets a delivery of new stock meanwhile.
    late = [f"late-{n}" for n in range(40)]
    phase_two = [
        cmd("CommitReservation" if n % 2 else "ReleaseReservation", sku, order_id=order)
        for n, order in enumerate(orders)
        for sku in SKUS
    ]
    phase_two += [
        cmd("ReserveStock", sku, order_id=order, quantity=rng.randint(1, 4))
        for order in late
        for sku in SKUS
    ]
    phase_two += [cmd("ReceiveStock", sku, quantity=10) for sku in SKUS]
    rng.shuffle(phase_two)
    await publish_many(amqp_url, QUEUE, phase_two)

    sent = {c["command_id"] for c in stock + reserves + phase_two}

    async def all_handled() -> bool:
        return await queue_depth(amqp_url, QUEUE) == 0 and await _handled(reader, sent)

    await eventually(all_handled, within=120, what="every inventory command handled")
    await asyncio.sleep(1)  # a straggling redelivery would show as a second application

    events = await inventory_events(reader)
    applied = Counter(
        e.metadata["command_id"]
        for e in events
        if not is_marker(e)  # a marker records a rejection, once per command id
    )
    assert [cid for cid, n in applied.items() if n != 1] == []  # nothing applied twice
    markers = Counter(e.metadata["command_id"] for e in events if is_marker(e))
    assert [cid for cid, n in markers.items() if n != 1] == []
    assert set(applied) | set(markers) == sent  # nothing lost

    totals: Counter[str] = Counter()
    for sku in SKUS:
        stream = await reader.read_stream(INVENTORY.stream(sku))
        totals.update(check_books(sku, stream))
    # the run really contended: stock ran out, and some reservations were still open
    assert totals["refused"] > 0
    assert totals["committed"] > 0
    assert await queue_depth(amqp_url, f"{QUEUE}.dlq") == 0
    for process in (first, second):
        assert process.poll() is None  # neither worker died
        # both competed: each logged outcomes of commands it handled (rejections at least)
        assert "conveyor.commands: command" in process.log.read_text()  # type: ignore[attr-defined]


async def _handled(store: SqliteEventStore, sent: set[str]) -> bool:
    seen = {e.metadata.get("command_id") for e in await inventory_events(store)}
    return sent <= seen
