"""A base for event-store decorators: everything is delegated to the wrapped store, so a
decorator overrides only what it adds to (NotifyingEventStore, TimedAppends)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from conveyor.eventstore.port import (
    AppendResult,
    EventStore,
    NewEvent,
    RecordedEvent,
    Snapshot,
)


class EventStoreDecorator:
    def __init__(self, inner: EventStore) -> None:
        self.inner = inner

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        return await self.inner.append(stream_id, expected_version, events)

    async def read_stream(
        self,
        stream_id: str,
        *,
        to_version: int | None = None,
        as_of: datetime | None = None,
        after_version: int = 0,
    ) -> list[RecordedEvent]:
        return await self.inner.read_stream(
            stream_id, to_version=to_version, as_of=as_of, after_version=after_version
        )

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return await self.inner.read_all(after=after, limit=limit)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        await self.inner.save_snapshot(snapshot)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        return await self.inner.load_snapshot(stream_id)

    async def head_position(self) -> int:
        return await self.inner.head_position()

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()
