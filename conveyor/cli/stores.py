"""Opening and closing the stores, written once for every command."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from conveyor.bootstrap import (
    describe_event_store,
    describe_read_store,
    open_event_store,
    open_read_store,
)
from conveyor.eventstore.port import EventStore
from conveyor.readmodels.port import ReadModelStore
from conveyor.settings import Settings


@asynccontextmanager
async def event_store(
    settings: Settings, *, read_only: bool, announce: bool = True
) -> AsyncIterator[EventStore]:
    """The configured event store, closed on the way out. `read_only`: a missing SQLite
    file is refused, never created empty. `announce`: name it on stderr first."""
    store = await open_event_store(settings, read_only=read_only)
    try:
        if announce:
            _using(f"event store {describe_event_store(settings)}")
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def read_store(
    settings: Settings, *, read_only: bool, announce: bool = True
) -> AsyncIterator[ReadModelStore]:
    """The configured read-model store, closed on the way out (as `event_store`)."""
    store = await open_read_store(settings, read_only=read_only)
    try:
        if announce:
            _using(f"read store {describe_read_store(settings)}")
        yield store
    finally:
        await store.close()


def _using(store: str) -> None:
    """A command's first line names the store it opened (a SQLite file by its absolute
    path): one started in another directory cannot use another file unnoticed. On stderr,
    so that --json output stays one document."""
    print(f"conveyor: {store}", file=sys.stderr, flush=True)
