"""Rebuild progress counts events on every event store (issue 14).

The event store runs on kurrentdbclient's own scripted servicers
(tests/unit/kurrentdbclient_servicers.py, not a KurrentDB) only because they hand out
KurrentDB-like positions: byte offsets, not event counts.
"""

from __future__ import annotations

from pathlib import Path

from conveyor.eventstore.kurrentdb import KurrentDBEventStore
from conveyor.eventstore.port import NewEvent
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.projections import PROJECTIONS
from conveyor.readmodels.rebuild import rebuild_many
from conveyor.readmodels.sqlite import SqliteReadModelStore
from tests.unit.kurrentdbclient_servicers import ScriptedNode
from tests.unit.test_rebuild_fold import random_log


async def test_progress_reports_events_not_positions_on_kurrentdb(tmp_path: Path) -> None:
    async with ScriptedNode() as node:
        store = KurrentDBEventStore(node.uri, timeout=10)
        await store.open()
        read_store = await SqliteReadModelStore(tmp_path / "readmodels.db").open()
        try:
            versions: dict[str, int] = {}
            for event in random_log(seed=14, orders=8):
                current = versions.get(event.stream_id, 0)
                if event.stream_id.startswith("order-") and event.version != current + 1:
                    continue
                new = NewEvent(
                    event.event_id, event.type, event.data, event.occurred_at, metadata={}
                )
                await store.append(event.stream_id, current, [new])
                versions[event.stream_id] = current + 1
            stored = sum(versions.values())

            seen: list[tuple[int, int]] = []
            await rebuild_many(
                [p.name for p in PROJECTIONS],
                store,
                read_store,
                ProjectionCollections(read_store, cache_seconds=0),
                page_size=7,
                progress=lambda done, total: seen.append((done, total)),
            )
        finally:
            await read_store.close()
            await store.close()
    assert len(seen) > 2
    assert all(done <= total <= stored for done, total in seen)
    assert seen[-1] == (stored, stored)
