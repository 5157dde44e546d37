"""Stored events at their current shape, before anyone reads them.

Every read of the store — the command handler's fold, temporal queries, the gateway,
rebuilds, gap healing — goes through `UpcastingEventStore`, which the composition root puts
around the adapter. An event stored at an older schema version leaves it upcast, by the
pure, registered functions of its aggregate's codec (domain/codec.py: v1 → v2 → …), with
the current `schema_version`; nothing is ever written back. An event this code cannot read
— a schema version newer than it knows, or a missing upcaster — is never passed on as if
it were current: the read fails with `UnreadableStoredEvent`, naming the event. That is a
failure of this code, not of the message nor of the store: a command goes round its retry
ladder (until a deployment that knows the version picks it up), a rebuild stops, and the
gateway does not move its checkpoint past the event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from conveyor.eventstore.decorator import EventStoreDecorator
from conveyor.eventstore.port import EventStore, RecordedEvent
from domain.codec import EventCodec, MissingUpcaster, UnknownSchemaVersion


class UnreadableStoredEvent(Exception):
    """A stored event this code must not read as current. Not a ValueError on purpose:
    callers that skip malformed foreign events must not skip this one."""

    def __init__(self, event: RecordedEvent, problem: Exception) -> None:
        super().__init__(
            f"stored event {event.event_id} (stream {event.stream_id!r}, version "
            f"{event.version}, type {event.type!r}, schema version {event.schema_version}) "
            f"cannot be read by this code: {problem}"
        )
        self.event = event
        self.problem = problem


class UpcastingEventStore(EventStoreDecorator):
    """`codecs`: stream prefix (`order-`) → the codec of that aggregate's events, built
    with any upcaster a setting binds. Streams and event types it does not know (rejection
    markers, other applications' streams) pass through untouched."""

    def __init__(self, inner: EventStore, codecs: Mapping[str, EventCodec[Any]]) -> None:
        super().__init__(inner)
        self._codecs = tuple(codecs.items())

    def _codec_of(self, stream_id: str) -> EventCodec[Any] | None:
        for prefix, codec in self._codecs:
            if stream_id.startswith(prefix):
                return codec
        return None

    def upcast(self, event: RecordedEvent) -> RecordedEvent:
        codec = self._codec_of(event.stream_id)
        if codec is None:
            return event
        current = codec.current_schema_version.get(event.type)
        if current is None or event.schema_version == current:
            return event
        try:
            data = codec.upcast(event.type, event.schema_version, event.data)
        except (UnknownSchemaVersion, MissingUpcaster) as problem:
            raise UnreadableStoredEvent(event, problem) from problem
        except (KeyError, TypeError, ValueError) as problem:  # an upcaster meeting odd data
            raise UnreadableStoredEvent(event, problem) from problem
        return replace(event, data=data, schema_version=current)

    async def read_stream(
        self,
        stream_id: str,
        *,
        to_version: int | None = None,
        as_of: datetime | None = None,
        after_version: int = 0,
    ) -> list[RecordedEvent]:
        events = await self.inner.read_stream(
            stream_id, to_version=to_version, as_of=as_of, after_version=after_version
        )
        return [self.upcast(event) for event in events]

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return [self.upcast(event) for event in await self.inner.read_all(after=after, limit=limit)]
