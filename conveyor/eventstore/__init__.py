"""The event store port and its adapters (SQLite, KurrentDB, in-memory)."""

from conveyor.eventstore.port import (
    NO_STREAM,
    AppendResult,
    ConcurrencyError,
    EventStore,
    EventStoreUnavailable,
    NewEvent,
    RecordedEvent,
)

__all__ = [
    "NO_STREAM",
    "AppendResult",
    "ConcurrencyError",
    "EventStore",
    "EventStoreUnavailable",
    "NewEvent",
    "RecordedEvent",
]
