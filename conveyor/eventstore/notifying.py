"""An event-store decorator that wakes in-process followers of the global log.

When the gateway runs in the same process as the command workers, it need not poll: each
append sets an event it waits on. Across processes it falls back to polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from conveyor.eventstore.decorator import EventStoreDecorator
from conveyor.eventstore.port import AppendResult, EventStore, NewEvent


class NotifyingEventStore(EventStoreDecorator):
    def __init__(self, inner: EventStore) -> None:
        super().__init__(inner)
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
