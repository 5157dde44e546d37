"""Loading an aggregate for a command: the whole stream, or its latest snapshot and the tail.

Snapshots are opt-in per aggregate (`AggregateDefinition.snapshot_every`) and only ever a
shortcut: a missing snapshot, one of another schema version, or one that cannot be read
or decoded means the whole stream is folded (with a warning when something was wrong).
Writing one happens after the command's append, in a background task, bounded (at most
`max_writers` at once, one per stream; a snapshot that finds no free writer is skipped —
the next command on that stream takes it), and its failure is only logged.

What a snapshot keeps (`Snapshot.data`): the state (`state`, in the aggregate's snapshot
schema), the aggregate version it covers (`aggregate_version`, rejection markers not
counted), and the ids of the last `RECENT_COMMANDS` commands whose events or markers it
covers (`recent_command_ids`), so that a resend of a recent command is still recognised
although its events are no longer read (see the command handler's docstring).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor.application.aggregates import AggregateDefinition, is_marker
from conveyor.eventstore.port import EventStore, RecordedEvent, Snapshot

logger = logging.getLogger("conveyor.snapshots")

RECENT_COMMANDS = 1000


@dataclass(frozen=True, slots=True)
class SnapshotBase:
    stream_version: int
    aggregate_version: int
    recent_command_ids: tuple[str, ...]
    state: Any


@dataclass(frozen=True, slots=True)
class Loaded:
    events: list[RecordedEvent]
    """What was read: the whole stream, or the tail after `base`."""
    state: Any
    aggregate_version: int
    stream_version: int
    base: SnapshotBase | None = None


class AggregateLoader:
    def __init__(
        self, store: EventStore, *, clock: Callable[[], datetime], max_writers: int = 4
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_writers = max_writers
        self._writing: dict[str, asyncio.Task[None]] = {}
        self.snapshots_written = 0

    async def load(
        self, definition: AggregateDefinition, aggregate_id: str, *, whole: bool = False
    ) -> Loaded:
        stream_id = definition.stream(aggregate_id)
        base = None
        if not whole and definition.snapshot_every is not None:
            base = await self._base(definition, stream_id)
        if base is None:
            events = await self._store.read_stream(stream_id)
            return Loaded(
                events,
                definition.fold(aggregate_id, events),
                sum(1 for e in events if not is_marker(e)),
                events[-1].version if events else 0,
            )
        tail = await self._store.read_stream(stream_id, after_version=base.stream_version)
        return Loaded(
            tail,
            definition.fold(aggregate_id, tail, state=base.state),
            base.aggregate_version + sum(1 for e in tail if not is_marker(e)),
            tail[-1].version if tail else base.stream_version,
            base,
        )

    async def _base(self, definition: AggregateDefinition, stream_id: str) -> SnapshotBase | None:
        assert definition.snapshots is not None
        try:
            snapshot = await self._store.load_snapshot(stream_id)
        except Exception as problem:  # never needed for correctness: fold in full
            logger.warning(
                "snapshot of %s could not be read (%s: %s): folding the whole stream",
                stream_id,
                type(problem).__name__,
                problem,
            )
            return None
        if snapshot is None:
            return None
        if snapshot.schema_version != definition.snapshots.schema_version:
            logger.info(
                "snapshot of %s has schema version %d, this code writes %d: ignored, "
                "folding the whole stream (the next snapshot replaces it)",
                stream_id,
                snapshot.schema_version,
                definition.snapshots.schema_version,
            )
            return None
        try:
            data = snapshot.data
            recent = data["recent_command_ids"]
            if not isinstance(recent, list):
                raise TypeError("recent_command_ids is not a list")
            return SnapshotBase(
                stream_version=snapshot.version,
                aggregate_version=_integer(data["aggregate_version"]),
                recent_command_ids=tuple(str(command_id) for command_id in recent),
                state=definition.snapshots.from_data(data["state"]),
            )
        except Exception as problem:
            logger.warning(
                "snapshot of %s at version %d is corrupt (%s: %s): folding the whole stream",
                stream_id,
                snapshot.version,
                type(problem).__name__,
                problem,
            )
            return None

    def appended(
        self,
        definition: AggregateDefinition,
        aggregate_id: str,
        loaded: Loaded,
        *,
        state: Any,
        aggregate_version: int,
        stream_version: int,
        command_id: str,
    ) -> None:
        """After a successful append: start writing a snapshot of `state` at
        `stream_version` if one is due, without waiting for it."""
        every = definition.snapshot_every
        if every is None:
            return
        covered = loaded.base.stream_version if loaded.base else 0
        if stream_version - covered < every:
            return
        stream_id = definition.stream(aggregate_id)
        if stream_id in self._writing or len(self._writing) >= self._max_writers:
            return  # bounded: the next command on the stream takes it
        earlier = loaded.base.recent_command_ids if loaded.base else ()
        recent = _recent(earlier, (e.metadata.get("command_id") for e in loaded.events), command_id)
        task = asyncio.create_task(
            self._save(definition, stream_id, state, aggregate_version, stream_version, recent)
        )
        self._writing[stream_id] = task
        task.add_done_callback(lambda _: self._writing.pop(stream_id, None))

    async def _save(
        self,
        definition: AggregateDefinition,
        stream_id: str,
        state: Any,
        aggregate_version: int,
        stream_version: int,
        recent: list[str],
    ) -> None:
        try:
            await self._store.save_snapshot(
                snapshot_of(
                    definition,
                    stream_id,
                    state,
                    aggregate_version=aggregate_version,
                    stream_version=stream_version,
                    recent_command_ids=recent,
                    taken_at=self._clock(),
                )
            )
            self.snapshots_written += 1
        except Exception as problem:  # a snapshot is never required: log and carry on
            logger.warning(
                "snapshot of %s at version %d was not written (%s: %s)",
                stream_id,
                stream_version,
                type(problem).__name__,
                problem,
            )

    async def drain(self) -> None:
        """Wait for the snapshots being written (tests, orderly shutdown)."""
        while self._writing:
            await asyncio.gather(*list(self._writing.values()), return_exceptions=True)


def snapshot_of(
    definition: AggregateDefinition,
    stream_id: str,
    state: Any,
    *,
    aggregate_version: int,
    stream_version: int,
    recent_command_ids: Sequence[str],
    taken_at: datetime,
) -> Snapshot:
    """The snapshot of `state`, folded from `stream_id` up to `stream_version`."""
    assert definition.snapshots is not None
    return Snapshot(
        stream_id=stream_id,
        version=stream_version,
        schema_version=definition.snapshots.schema_version,
        data={
            "state": definition.snapshots.to_data(state),
            "aggregate_version": aggregate_version,
            "recent_command_ids": list(recent_command_ids),
        },
        taken_at=taken_at,
    )


def _recent(earlier: Sequence[str], tail: Iterable[str | None], command_id: str) -> list[str]:
    ordered = dict.fromkeys(earlier)
    for seen in (*tail, command_id):
        if seen is not None:
            ordered.pop(seen, None)
            ordered[seen] = None
    return list(ordered)[-RECENT_COMMANDS:]


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"not an integer: {value!r}")
    return value
