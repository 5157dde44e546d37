"""An in-memory event store: the reference behaviour of the port, for unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from conveyor.eventstore.port import (
    AppendResult,
    ConcurrencyError,
    NewEvent,
    RecordedEvent,
    Snapshot,
)
from conveyor.eventstore.serialization import to_utc


class InMemoryEventStore:
    def __init__(self) -> None:
        self._log: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._event_ids: set[str] = set()
        self._snapshots: dict[str, Snapshot] = {}
        self._lock = asyncio.Lock()

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        async with self._lock:
            stream = self._streams.setdefault(stream_id, [])
            if len(stream) != expected_version:
                raise ConcurrencyError(stream_id, expected_version, len(stream))
            if any(str(e.event_id) in self._event_ids for e in events):
                raise ConcurrencyError(stream_id, expected_version, len(stream))
            for event in events:
                recorded = RecordedEvent(
                    event_id=event.event_id,
                    stream_id=stream_id,
                    version=len(stream) + 1,
                    position=len(self._log) + 1,
                    type=event.type,
                    data=dict(event.data),
                    occurred_at=to_utc(event.occurred_at),
                    schema_version=event.schema_version,
                    metadata=dict(event.metadata),
                )
                stream.append(recorded)
                self._log.append(recorded)
                self._event_ids.add(str(event.event_id))
            return AppendResult(version=len(stream), position=len(self._log))

    async def read_stream(
        self,
        stream_id: str,
        *,
        to_version: int | None = None,
        as_of: datetime | None = None,
        after_version: int = 0,
    ) -> list[RecordedEvent]:
        events = list(self._streams.get(stream_id, []))
        if to_version is not None:
            events = events[: max(to_version, 0)]
        if as_of is not None:
            cutoff = to_utc(as_of)
            for index, event in enumerate(events):
                if event.occurred_at > cutoff:
                    events = events[:index]
                    break
        return [replace(e) for e in events if e.version > after_version]

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return self._log[max(after, 0) : max(after, 0) + limit]

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        kept = self._snapshots.get(snapshot.stream_id)
        if kept is None or kept.version < snapshot.version:
            self._snapshots[snapshot.stream_id] = replace(snapshot, data=dict(snapshot.data))

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        return self._snapshots.get(stream_id)

    async def head_position(self) -> int:
        return len(self._log)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
