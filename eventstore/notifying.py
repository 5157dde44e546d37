"""An event-store decorator that wakes in-process followers of the global log.

When the gateway runs in the same process as the command workers, it need not poll: each
append sets an event it waits on. Across processes it falls back to polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime

from eventstore.port import AppendResult, EventStore, NewEvent, RecordedEvent


class NotifyingEventStore:
    def __init__(self, inner: EventStore) -> None:
        self.inner = inner
        self._appended = asyncio.Event()

    async def wait_for_append(self, within: float) -> None:
        """Return after the next append, or after `within` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._appended.wait(), within)
        self._appended.clear()

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        result = await self.inner.append(stream_id, expected_version, events)
        self._appended.set()
        return result

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
