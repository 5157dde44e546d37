"""A base for event-store decorators: everything is delegated to the wrapped store, so a
decorator overrides only what it adds to (NotifyingEventStore, TimedAppends)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from conveyor.eventstore.port import AppendResult, EventStore, NewEvent, RecordedEvent


class EventStoreDecorator:
    def __init__(self, inner: EventStore) -> None:
        self.inner = inner

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        return await self.inner.append(stream_id, expected_version, events)

    async def read_stream(
        self, stream_id: str, *, to_version: int | None = None, as_of: datetime | None = None
    ) -> list[RecordedEvent]:
        return await self.inner.read_stream(stream_id, to_version=to_version, as_of=as_of)

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return await self.inner.read_all(after=after, limit=limit)

    async def head_position(self) -> int:
        return await self.inner.head_position()

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()
