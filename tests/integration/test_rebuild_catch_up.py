"""A rebuild after its switch: live workers then write only to the new version, so the
catch-up must wait out a store that is away, never point readers back at the old version,
record its position so that an interrupted catch-up is resumed, and keep its lease renewed
through every wait. Real SQLite files for both stores; the interruptions are real too
(another connection locking the read store, a cancelled task, an event the projections
refuse)."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from conveyor.aggregates import AGGREGATES
from conveyor.eventstore.port import NewEvent, RecordedEvent
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.readmodels.applier import ProjectionApplier
from conveyor.readmodels.checkpoints import LeasedCheckpoint
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.projections import ORDER_SUMMARY
from conveyor.readmodels.rebuild import RebuildError, project_in_memory, rebuild
from conveyor.readmodels.sqlite import SqliteReadModelStore
from messaging.customers import IntegrationMapper
from tests.integration.test_command_worker import DatabaseLock
from tests.integration.test_rebuild import store_log
from tests.rabbit import eventually
from tests.unit.test_rebuild_fold import random_log

NAME = ORDER_SUMMARY.name


@dataclass
class Stores:
    event_store: SqliteEventStore
    read_store: SqliteReadModelStore
    events_path: Path
    read_path: Path
    later: list[RecordedEvent]
    """Events of other orders, stored only once the rebuild has switched."""


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    events = random_log(11, orders=60)
    later = [e for e in events if zlib.crc32(e.stream_id.encode()) % 4 == 0]
    first = [e for e in events if zlib.crc32(e.stream_id.encode()) % 4 != 0]
    await store_log(tmp_path / "events.db", first)
    event_store = await SqliteEventStore(tmp_path / "events.db").open()
    read_store = await SqliteReadModelStore(tmp_path / "readmodels.db", busy_timeout=0.2).open()
    yield Stores(event_store, read_store, tmp_path / "events.db", tmp_path / "readmodels.db", later)
    await read_store.close()
    await event_store.close()


async def switched_to(read_store: SqliteReadModelStore, version: int) -> bool:
    pointer = await ProjectionCollections(read_store, cache_seconds=0).read(NAME)
    return pointer.version == version


async def active_documents(stores: Stores) -> dict[str, dict[str, object]]:
    pointer = await ProjectionCollections(stores.read_store, cache_seconds=0).read(NAME)
    documents = await stores.read_store.find(pointer.collection, limit=1_000_000)
    return {d.id: d.body for d in documents}


async def test_the_catch_up_waits_out_a_read_store_outage(stores: Stores) -> None:
    collections = ProjectionCollections(stores.read_store, cache_seconds=1.0)
    task = asyncio.create_task(rebuild(NAME, stores.event_store, stores.read_store, collections))
    await eventually(lambda: switched_to(stores.read_store, 2), what="the switch")
    later = await store_log(stores.events_path, stores.later)  # only the catch-up sees them
    lock = DatabaseLock(str(stores.read_path))  # the catch-up starts 2 s after the switch
    try:
        await asyncio.sleep(4.0)
        assert not task.done()
    finally:
        lock.release()
    report = await task
    assert report.caught_up_events == later
    assert await active_documents(stores) == await project_in_memory(NAME, stores.event_store)


async def test_readers_are_never_pointed_back_at_a_version_that_lacks_live_writes(
    stores: Stores,
) -> None:
    collections = ProjectionCollections(stores.read_store, cache_seconds=1.0)
    task = asyncio.create_task(rebuild(NAME, stores.event_store, stores.read_store, collections))
    await eventually(lambda: switched_to(stores.read_store, 2), what="the switch")
    # A live worker applies a new order's first event: to the new version only.
    await store_log(stores.events_path, stores.later)
    created = next(e for e in stores.later if e.type == "OrderCreated")
    live = await IntegrationMapper(stores.event_store, AGGREGATES).integration_event(created)
    assert live is not None
    live_worker = ProjectionApplier(
        stores.read_store, ProjectionCollections(stores.read_store, cache_seconds=0), ORDER_SUMMARY
    )
    assert await live_worker.apply(live) == "updated"
    # … and the catch-up meets an event the projections refuse: it cannot finish.
    await append_refused_event(stores.event_store)

    with pytest.raises(RebuildError, match="readers stay on order_summary_v2") as raised:
        await task
    assert "resumes after position" in str(raised.value)
    assert await switched_to(stores.read_store, 2)
    assert created.stream_id.removeprefix("order-") in await active_documents(stores)


async def append_refused_event(event_store: SqliteEventStore) -> None:
    """An order confirmed, then an item added: the lifecycle refuses it (ContractViolation)."""
    now = datetime.now(UTC)
    await event_store.append(
        "order-refused",
        0,
        [
            NewEvent(uuid4(), "OrderCreated", {"customer_id": "c-x"}, now),
            NewEvent(uuid4(), "OrderConfirmed", {"total": "0.00"}, now),
            NewEvent(uuid4(), "ItemAdded", {"sku": "S", "quantity": 1, "unit_price": "1"}, now),
        ],
    )


async def test_an_interrupted_catch_up_is_resumed_from_its_recorded_position(
    stores: Stores,
) -> None:
    collections = ProjectionCollections(stores.read_store, cache_seconds=1.0)
    task = asyncio.create_task(rebuild(NAME, stores.event_store, stores.read_store, collections))
    await eventually(lambda: switched_to(stores.read_store, 2), what="the switch")
    later = await store_log(stores.events_path, stores.later)
    task.cancel()  # killed between the switch and the end of its catch-up
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await switched_to(stores.read_store, 2)  # readers stay on the new version

    report = await rebuild(NAME, stores.event_store, stores.read_store, collections)
    assert report.resumed
    assert (report.collection, report.caught_up_events) == ("order_summary_v2", later)
    assert await switched_to(stores.read_store, 2)  # resumed, not rebuilt again
    assert await active_documents(stores) == await project_in_memory(NAME, stores.event_store)

    # Finished: the next rebuild is an ordinary one.
    again = await rebuild(NAME, stores.event_store, stores.read_store, collections)
    assert not again.resumed
    assert again.collection == "order_summary_v3"


async def test_the_lease_is_renewed_through_the_wait_after_the_switch(stores: Stores) -> None:
    """The catch-up waits twice the pointer cache after the switch; with a cache of 6 s that
    outlasts the 10 s lease, which used to be renewed only per page of the log."""
    collections = ProjectionCollections(stores.read_store, cache_seconds=6.0)
    task = asyncio.create_task(rebuild(NAME, stores.event_store, stores.read_store, collections))
    contender = LeasedCheckpoint(stores.read_store, f"rebuild-{NAME}", "contender")

    async def rebuild_holds_the_lease() -> bool:
        _, owner, _ = await contender.read()
        return owner is not None and owner.startswith("rebuild-")

    await eventually(rebuild_holds_the_lease, what="the rebuild to take its lease")
    taken = False
    while not task.done() and not taken:
        taken = await contender.try_acquire()
        await asyncio.sleep(0.2)
    if taken:
        await contender.release()
    report = await task
    assert not taken, "a second rebuild could take the lease while the first one ran"
    assert report.collection == "order_summary_v2"
