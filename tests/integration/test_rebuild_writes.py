"""What a rebuild writes, and when, against a real SQLite read store: the pointer a worker
caches, the batches a failed rebuild leaves behind, and the lock its index builds take."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.readmodels import rebuild as rebuild_module
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.port import ReadStoreUnavailable
from conveyor.readmodels.rebuild import rebuild, rebuild_many
from conveyor.readmodels.sqlite import SqliteReadModelStore
from tests.integration.test_rebuild import store_log
from tests.unit.test_rebuild_fold import random_log


@pytest.fixture
async def read_store(tmp_path: Path) -> AsyncIterator[SqliteReadModelStore]:
    store = await SqliteReadModelStore(tmp_path / "readmodels.db").open()
    try:
        yield store
    finally:
        await store.close()


class SlowPointerReads:
    """The store, with every read of a pointer taking `seconds` of the clock (a slow disk,
    a busy reader pool)."""

    def __init__(self, store: SqliteReadModelStore, clock: list[float], seconds: float) -> None:
        self._store, self._clock, self._seconds = store, clock, seconds

    async def get(self, collection: str, doc_id: str) -> Any:
        document = await self._store.get(collection, doc_id)
        self._clock[0] += self._seconds
        return document

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_a_slow_pointer_read_is_not_trusted_past_the_cache_time_from_its_start(
    read_store: SqliteReadModelStore,
) -> None:
    now = [0.0]
    worker = ProjectionCollections(
        SlowPointerReads(read_store, now, seconds=0.8),  # type: ignore[arg-type]
        cache_seconds=1.0,
        clock=lambda: now[0],
    )
    before = await worker.active("order_summary")  # read at 0.0, returned at 0.8
    assert before.collection == "order_summary_v1"
    # A rebuild elsewhere switches at 0.0 + a moment; its catch-up waits out the cache time
    # counted from its switch, so a worker may trust what it read only until 1.0.
    rebuild = ProjectionCollections(read_store, cache_seconds=1.0)
    await rebuild.switch(await rebuild.read("order_summary"), 2)
    now[0] = 1.5
    after = await worker.active("order_summary")
    assert after.collection == "order_summary_v2"


class RequestsCarriedOutOnceSent:
    """The store, with each bulk write taking a while and carried out once sent even if
    its caller gives up (as a server does with a request it received): what a batch the
    rebuild cancels can still do. The third batch fails."""

    def __init__(self, store: SqliteReadModelStore) -> None:
        self._store = store
        self.calls = 0
        self.sent: list[asyncio.Task[None]] = []
        self.cancel_at_third: asyncio.Task[Any] | None = None

    async def put_many_json(self, collection: str, documents: Any) -> None:
        self.calls += 1
        if self.calls == 3:
            if self.cancel_at_third is not None:
                self.cancel_at_third.cancel()
            else:
                raise ReadStoreUnavailable("the third batch fails")

        async def carried_out() -> None:
            await asyncio.sleep(0.2)
            await self._store.put_many_json(collection, documents)

        self.sent.append(asyncio.ensure_future(carried_out()))
        await asyncio.shield(self.sent[-1])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_a_failed_rebuild_returns_only_after_its_batches_are_done(
    tmp_path: Path, read_store: SqliteReadModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store_log(tmp_path / "events.db", random_log(7, orders=60))
    event_store = await SqliteEventStore(tmp_path / "events.db").open()
    monkeypatch.setattr(rebuild_module, "_WRITE_BATCH", 5)
    store = RequestsCarriedOutOnceSent(read_store)
    try:
        with pytest.raises(ReadStoreUnavailable, match="third batch"):
            await rebuild(
                "order_summary",
                event_store,
                store,  # type: ignore[arg-type]
                ProjectionCollections(read_store, cache_seconds=0),
            )
        # Its leases are released: whatever it wrote is written by now, nothing later.
        assert all(sent.done() for sent in store.sent)
        written = await read_store.count("order_summary_v2")
        await asyncio.sleep(0.5)
        assert await read_store.count("order_summary_v2") == written
    finally:
        await asyncio.gather(*store.sent, return_exceptions=True)
        await event_store.close()


async def test_a_cancelled_rebuild_returns_only_after_its_batches_are_done(
    tmp_path: Path, read_store: SqliteReadModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store_log(tmp_path / "events.db", random_log(7, orders=60))
    event_store = await SqliteEventStore(tmp_path / "events.db").open()
    monkeypatch.setattr(rebuild_module, "_WRITE_BATCH", 5)
    store = RequestsCarriedOutOnceSent(read_store)
    try:
        running = asyncio.ensure_future(
            rebuild(
                "order_summary",
                event_store,
                store,  # type: ignore[arg-type]
                ProjectionCollections(read_store, cache_seconds=0),
            )
        )
        store.cancel_at_third = running
        with pytest.raises(asyncio.CancelledError):
            await running
        assert all(sent.done() for sent in store.sent)
        written = await read_store.count("order_summary_v2")
        await asyncio.sleep(0.5)
        assert await read_store.count("order_summary_v2") == written
    finally:
        await asyncio.gather(*store.sent, return_exceptions=True)
        await event_store.close()


class WriteOrder:
    """The store, noting the order of the writes that matter here: index builds and lease
    renewals."""

    def __init__(self, store: SqliteReadModelStore) -> None:
        self._store = store
        self.writes: list[tuple[str, Any]] = []

    async def ensure_collection(self, collection: str, indexes: Any = ()) -> None:
        if indexes:
            self.writes.append(("index", (collection, tuple(indexes))))
        await self._store.ensure_collection(collection, indexes)

    async def put(
        self, collection: str, doc_id: str, body: Any, *, expected_rev: int, where: Any = None
    ) -> int:
        if doc_id.startswith("rebuild-") and body.get("owner"):
            self.writes.append(("lease", doc_id))
        return await self._store.put(
            collection, doc_id, body, expected_rev=expected_rev, where=where
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_indexes_are_built_one_per_transaction_with_the_lease_renewed_before_each(
    tmp_path: Path, read_store: SqliteReadModelStore
) -> None:
    await store_log(tmp_path / "events.db", random_log(7, orders=60))
    event_store = await SqliteEventStore(tmp_path / "events.db").open()
    store = WriteOrder(read_store)
    try:
        await rebuild_many(
            ["order_summary", "active_orders"],
            event_store,
            store,  # type: ignore[arg-type]
            ProjectionCollections(read_store, cache_seconds=0),
        )
    finally:
        await event_store.close()
    builds = [at for at, (kind, _) in enumerate(store.writes) if kind == "index"]
    # Each build holds SQLite's write lock alone, so other processes' writes go between
    # them, and the lease is fresh when each starts.
    assert [store.writes[at][1] for at in builds] == [
        ("order_summary_v2", (("customer_id",),)),
        ("active_orders_v2", (("status", "customer_id", "created_at"),)),
        ("active_orders_v2", (("status", "created_at"),)),
    ]
    for at in builds:
        assert {doc for kind, doc in store.writes[at - 2 : at] if kind == "lease"} == {
            "rebuild-order_summary",
            "rebuild-active_orders",
        }
    assert store.writes[builds[-1] + 1][0] == "lease"  # and after the last one
