"""How far each projection has got in the global log, for `conveyor status`.

Projections are fed through RabbitMQ, so they have no position of their own: the gateway
stamps each integration event with its global-log position (header `x-conveyor-position`)
and a projection consumer remembers the highest position it has applied — an in-memory
max, nothing more per message. A ProgressWriter flushes those maxima to one read-store
document per projection at most once per interval, and once more on stop.

Competing workers of one projection share its document: a flush is a compare-and-set that
keeps the larger position, so a slower worker never moves it back, and there is nothing
to clean up after workers that are gone (per-worker documents would pile up).

The position is a high-water mark, not a guarantee: events below it may still be in
flight, waiting on the retry ladder or dead-lettered. `conveyor status` shows the
projection's pending and dead-lettered messages next to it for that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.readmodels.port import ReadModelStore, RevisionConflict

logger = logging.getLogger("conveyor.projections")

PROGRESS = "conveyor_projection_progress"
POSITION_HEADER = "x-conveyor-position"
"""AMQP header of an integration event: the source event's position in the global log."""


def position_of(headers: Mapping[str, Any] | None) -> int | None:
    """The global-log position a message carries, or None (published before the header
    existed, or by someone other than the gateway)."""
    if not headers:
        return None
    value = headers.get(POSITION_HEADER)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (str, bytes)):
        with contextlib.suppress(ValueError):
            return int(value)
    return None


@dataclass(frozen=True, slots=True)
class ProjectionProgress:
    name: str
    position: int
    updated_at: float
    """When a worker last recorded a higher position (Unix time)."""


class ProgressTracker:
    """One projection's highest applied position in this process."""

    __slots__ = ("flushed", "name", "position", "updated_at")

    def __init__(self, name: str) -> None:
        self.name = name
        self.position = 0
        self.updated_at = 0.0
        self.flushed = 0

    def observe(self, position: int | None) -> None:
        if position is not None and position > self.position:
            self.position = position
            self.updated_at = time.time()


class ProgressWriter:
    def __init__(
        self,
        store: ReadModelStore,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._interval = interval
        self._clock = clock
        self._trackers: dict[str, ProgressTracker] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def tracker(self, name: str) -> ProgressTracker:
        return self._trackers.setdefault(name, ProgressTracker(name))

    def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name="projection-progress")

    async def stop(self) -> None:
        """Stop the periodic flush and write what is left (call after the consumers stop)."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)
            if self._stop.is_set():
                return
            try:
                await self.flush()
            except Exception as error:  # the read store is down: try again next time
                logger.warning("could not record projection progress: %s", error)

    async def flush(self) -> None:
        for tracker in list(self._trackers.values()):
            position = tracker.position
            if position > tracker.flushed:
                await _record(self._store, tracker.name, position, tracker.updated_at)
                tracker.flushed = position


async def _record(store: ReadModelStore, name: str, position: int, updated_at: float) -> None:
    """Raise the stored position to `position` unless another worker already went further."""
    for _ in range(10):
        document = await store.get(PROGRESS, name)
        if document is not None and int(document.body.get("position", 0)) >= position:
            return
        body = {"position": position, "updated_at": updated_at}
        try:
            await store.put(PROGRESS, name, body, expected_rev=document.rev if document else 0)
        except RevisionConflict:
            continue
        return


async def read_progress(store: ReadModelStore, names: list[str]) -> dict[str, ProjectionProgress]:
    """The recorded progress of the named projections (those that recorded any)."""
    documents = await store.get_many(PROGRESS, names)
    return {
        name: ProjectionProgress(
            name, int(document.body.get("position", 0)), float(document.body.get("updated_at", 0))
        )
        for name, document in documents.items()
    }
