"""Temporal queries: an aggregate's events and its state as of a version or a point in time.

Versions here are aggregate versions (domain events only): rejection markers in the stream
are bookkeeping, never shown and never folded (conveyor/application/rejections.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor.application.aggregates import AggregateDefinition, aggregate_version, is_marker
from conveyor.eventstore.port import EventStore, RecordedEvent


@dataclass(frozen=True, slots=True)
class AggregateHistory:
    aggregate_id: str
    events: list[RecordedEvent]
    """The domain events, markers left out."""
    state: Any


async def aggregate_history(
    store: EventStore,
    definition: AggregateDefinition,
    aggregate_id: str,
    *,
    as_of_version: int | None = None,
    as_of: datetime | None = None,
) -> AggregateHistory:
    stored = await store.read_stream(definition.stream(aggregate_id), as_of=as_of)
    events = [
        e
        for e in stored
        if not is_marker(e) and (as_of_version is None or aggregate_version(e) <= as_of_version)
    ]
    return AggregateHistory(aggregate_id, events, definition.fold(aggregate_id, events))
