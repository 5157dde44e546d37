"""Rebuilding read models from a SQLite event store into SQLite read models (no broker):
one pass over the log feeds every projection rebuilt, and each read model ends equal to
`project_in_memory` — a fold of the validated integration events — whichever way the
rebuild folded it (fast fold, the projections themselves, or one handing over to the other).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor.eventstore.port import NewEvent, RecordedEvent
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.readmodels import rebuild as rebuild_module
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.projections import PROJECTIONS
from conveyor.readmodels.rebuild import (
    RebuildError,
    project_in_memory,
    rebuild,
    rebuild_all,
    rebuild_many,
)
from conveyor.readmodels.sqlite import SqliteReadModelStore
from tests.unit.test_rebuild_fold import random_log


async def store_log(path: Path, events: list[RecordedEvent]) -> int:
    """Append `events` in log order (skipping those whose version is not the stream's next:
    the generator's extras), returning how many were stored."""
    store = await SqliteEventStore(path).open()
    versions: dict[str, int] = {}
    try:
        for event in events:
            current = versions.get(event.stream_id, 0)
            if event.stream_id.startswith("order-") and event.version != current + 1:
                continue
            await store.append(
                event.stream_id,
                current,
                [
                    NewEvent(
                        event.event_id,
                        event.type,
                        event.data,
                        event.occurred_at,
                        metadata=event.metadata,
                    )
                ],
            )
            versions[event.stream_id] = current + 1
    finally:
        await store.close()
    return sum(versions.values())


async def read_models(
    event_store: SqliteEventStore, read_store: SqliteReadModelStore
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(active read models as stored, what project_in_memory says they must be)."""
    collections = ProjectionCollections(read_store, cache_seconds=0)
    actual, expected = {}, {}
    for projection in PROJECTIONS:
        active = await collections.active(projection.name)
        documents = await read_store.find(active.collection, limit=1_000_000)
        actual[projection.name] = {d.id: d.body for d in documents}
        expected[projection.name] = await project_in_memory(projection.name, event_store)
    return actual, expected


@pytest.fixture
async def stores(tmp_path: Path) -> Any:
    events = random_log(7, orders=120)
    # One event the fast fold leaves to the projections (pydantic reads "2" as 2): from
    # there on, the rebuild hands over.
    middle = len(events) // 2
    for index in range(middle, len(events)):
        event = events[index]
        if event.type == "ItemAdded" and event.stream_id.startswith("order-"):
            events[index] = RecordedEvent(
                event_id=event.event_id,
                stream_id=event.stream_id,
                version=event.version,
                position=event.position,
                type=event.type,
                data={**event.data, "quantity": str(event.data["quantity"])},
                occurred_at=event.occurred_at,
                metadata=event.metadata,
            )
            break
    stored = await store_log(tmp_path / "events.db", events)
    event_store = await SqliteEventStore(tmp_path / "events.db").open()
    read_store = await SqliteReadModelStore(tmp_path / "readmodels.db").open()
    yield event_store, read_store, stored
    await read_store.close()
    await event_store.close()


class DictsOnly:
    """A read-model store without put_many_json (as MongoDB's): documents go as dicts."""

    def __init__(self, store: SqliteReadModelStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name == "put_many_json":
            raise AttributeError(name)
        return getattr(self._store, name)


@pytest.mark.parametrize("json_text", [True, False])
@pytest.mark.parametrize("fold_orders", [1_000_000, 25])
@pytest.mark.parametrize("page_size", [20_000, 37])
async def test_one_pass_rebuilds_every_read_model_equal_to_a_fresh_fold(
    stores: Any,
    fold_orders: int,
    page_size: int,
    json_text: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event_store, read_store, stored = stores
    writer = read_store if json_text else DictsOnly(read_store)
    handed_over: list[int] = []
    fold_page = rebuild_module._fold_page

    async def counting(page: Any, *args: Any) -> None:
        handed_over.append(page[0].position)
        await fold_page(page, *args)

    monkeypatch.setattr(rebuild_module, "_fold_page", counting)
    collections = ProjectionCollections(read_store, cache_seconds=0)
    seen: list[tuple[int, int]] = []
    reports = await rebuild_many(
        [p.name for p in PROJECTIONS],
        event_store,
        writer,
        collections,
        page_size=page_size,
        fold_orders=fold_orders,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert [r.name for r in reports] == [p.name for p in PROJECTIONS]
    assert all(r.events == stored and r.collection.endswith("_v2") for r in reports)
    assert seen[-1] == (stored, stored)
    assert handed_over  # the projections folded the rest of the log themselves
    if fold_orders < 100 and page_size < 100:  # handed over once it held enough orders
        assert handed_over[0] < stored // 4
    actual, expected = await read_models(event_store, read_store)
    assert actual == expected
    assert {r.name: r.documents for r in reports} == {n: len(d) for n, d in expected.items()}


async def test_rebuilds_switch_versions_and_drop_old_ones(stores: Any) -> None:
    event_store, read_store, _ = stores
    collections = ProjectionCollections(read_store, cache_seconds=0)
    single = await rebuild("customer_history", event_store, read_store, collections)
    assert single.collection == "customer_history_v2"
    reports = await rebuild_all(event_store, read_store, collections)
    assert [r.collection for r in reports] == [
        "order_summary_v2",
        "customer_history_v3",
        "active_orders_v2",
        "stock_levels_v2",
    ]
    assert "customer_history_v1" not in await read_store.list_collections()
    actual, expected = await read_models(event_store, read_store)
    assert actual == expected


async def test_unknown_projections_are_refused(stores: Any) -> None:
    event_store, read_store, _ = stores
    collections = ProjectionCollections(read_store, cache_seconds=0)
    with pytest.raises(RebuildError, match="unknown projection 'nonsense'"):
        await rebuild_many(["order_summary", "nonsense"], event_store, read_store, collections)
