"""Event-store adapters under the one contract suite: each test runs against every adapter."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.eventstore.memory import InMemoryEventStore
from conveyor.eventstore.port import EventStore
from conveyor.eventstore.sqlite import SqliteEventStore

KURRENTDB_URL = os.environ.get("CONVEYOR_TEST_KURRENTDB_URL")


@pytest.fixture(params=["memory", "sqlite", "kurrentdb"])
async def event_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    store: EventStore
    if request.param == "memory":
        store = InMemoryEventStore()
    elif request.param == "sqlite":
        store = await SqliteEventStore(tmp_path / "events.db").open()
    else:
        if not KURRENTDB_URL:
            pytest.skip(
                "CONVEYOR_TEST_KURRENTDB_URL is not set: no KurrentDB server to test against"
            )
        from conveyor.eventstore.kurrentdb import KurrentDBEventStore

        kurrent = KurrentDBEventStore(KURRENTDB_URL)
        await kurrent.open()
        store = kurrent
    try:
        yield store
    finally:
        await store.close()
