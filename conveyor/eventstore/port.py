"""The event store port: the only thing the application knows about event storage.

Streams are numbered 1, 2, 3… (an event's `version`); an empty or missing stream is at
version 0, which is what `NO_STREAM` means as an expected version. The global log orders
every event of every stream by `position`, a positive integer that only grows (SQLite: a
row id; KurrentDB: the commit position). Consumers follow it with `read_all(after=…)`.

Snapshots sit beside the streams, never in them nor in the global log: the gateway,
rebuilds and temporal queries never see one. A snapshot is only a cache of a fold: each
stream keeps at most its latest, and losing it (or finding it unreadable) costs time,
never correctness.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from conveyor.store_failures import StoreUnavailable

NO_STREAM = 0


@dataclass(frozen=True, slots=True)
class NewEvent:
    event_id: UUID
    type: str
    data: Mapping[str, Any]
    occurred_at: datetime
    schema_version: int = 1
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    event_id: UUID
    stream_id: str
    version: int
    position: int
    type: str
    data: Mapping[str, Any]
    occurred_at: datetime
    schema_version: int = 1
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AppendResult:
    version: int
    """The stream's version after the append (the last new event's version)."""
    position: int
    """The global-log position of the last new event."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An aggregate's state as folded from its stream up to `version` inclusive."""

    stream_id: str
    version: int
    """The last stream version the state covers: load the tail after it."""
    schema_version: int
    """The shape of `data` (the aggregate's snapshot schema): another shape is ignored."""
    data: Mapping[str, Any]
    taken_at: datetime


class UnreadableSnapshot(ValueError):
    """A stored snapshot that cannot be decoded: the caller folds the stream in full."""


class ConcurrencyError(Exception):
    """The stream was not at the expected version: someone else appended first."""

    def __init__(self, stream_id: str, expected: int, actual: int | None) -> None:
        super().__init__(
            f"stream {stream_id!r} expected at version {expected}, but it is at "
            f"{'an unknown version' if actual is None else actual}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class EventStoreUnavailable(StoreUnavailable):
    """The store could not be reached or did not answer in time: a transient failure."""


class EventStore(Protocol):
    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        """Append atomically if the stream is at `expected_version` (`NO_STREAM` = empty),
        else raise ConcurrencyError."""
        ...

    async def read_stream(
        self,
        stream_id: str,
        *,
        to_version: int | None = None,
        as_of: datetime | None = None,
        after_version: int = 0,
    ) -> list[RecordedEvent]:
        """The stream's events in version order: all, up to `to_version` inclusive, or those
        that occurred at or before `as_of` (stopping at the first later one); only those
        after `after_version` (the tail behind a snapshot). A missing stream reads as
        empty."""
        ...

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """At most `limit` events of the global log with position > `after`, in order."""
        ...

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep `snapshot` as its stream's latest, unless one of a later version is kept
        already (a slow writer never replaces a newer snapshot with an older one)."""
        ...

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """The stream's latest snapshot, None when it has none; UnreadableSnapshot when the
        stored one cannot be decoded."""
        ...

    async def head_position(self) -> int:
        """The position of the last event in the global log (0 when empty)."""
        ...

    async def ping(self) -> None:
        """Raise EventStoreUnavailable unless the store answers a real request."""
        ...

    async def close(self) -> None: ...
