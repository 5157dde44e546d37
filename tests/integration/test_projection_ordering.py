"""Found by `make chaos`: inside one projection process, deliveries are handled
concurrently (one task each, up to the prefetch), and the applier looked up the active
collection before taking the document's lock. Whenever the cached pointer had expired, a
later event of an order could overtake an earlier one: a spurious gap, sent round the retry
ladder — and with a short retry budget, a healthy event dead-lettered."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from conveyor.readmodels.applier import ProjectionApplier
from conveyor.readmodels.collections import PROJECTION_STATE, ProjectionCollections
from conveyor.readmodels.port import Document
from conveyor.readmodels.projections import PROJECTIONS_BY_NAME
from conveyor.readmodels.sqlite import SqliteReadModelStore
from tests.unit.test_projections import OrderEvents


class SlowPointerStore:
    """The real store, except that reading the projections' pointer takes `delays[n]`
    seconds for the n-th reader: the first delivery's lookup finishes last."""

    def __init__(self, store: SqliteReadModelStore) -> None:
        self._store = store
        self.delays: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get(self, collection: str, doc_id: str) -> Document | None:
        if collection == PROJECTION_STATE and self.delays:
            await asyncio.sleep(self.delays.pop(0))
        return await self._store.get(collection, doc_id)


async def test_events_of_one_document_apply_in_the_order_they_arrived(tmp_path: Path) -> None:
    store = await SqliteReadModelStore(tmp_path / "readmodels.db").open()
    try:
        slow = SlowPointerStore(store)
        collections = ProjectionCollections(slow, cache_seconds=0)  # type: ignore[arg-type]
        applier = ProjectionApplier(
            slow,  # type: ignore[arg-type]
            collections,
            PROJECTIONS_BY_NAME["order_summary"],
        )
        await applier.ensure_collection()
        order = OrderEvents("o-1", "c-1")
        created, added = order.created(), order.added("SKU-1", 1, "1.00")

        slow.delays = [0.05, 0.0]
        results = await asyncio.gather(applier.apply(created), applier.apply(added))

        assert results == ["updated", "updated"]
    finally:
        await store.close()
