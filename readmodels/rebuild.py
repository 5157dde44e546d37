"""Rebuilding a read model from the event store's global log (never from the broker).

Blue/green: the events are folded into a fresh collection `<name>_v<N+1>` while readers and
live updates keep using `_v<N>`; then the pointer switches in one compare-and-set, and a
catch-up pass applies — with the same guards as live updates — whatever was stored while
the switch happened. Live updates that reach the new collection early are duplicates to the
catch-up, and events the catch-up has not reached yet are gaps to live updates, retried by
their ladder: either way, every event lands exactly once.

The fold is batched: a page of events is applied in memory to the documents it touches
(loaded in one request) and written back with one bulk upsert.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventstore.port import EventStore
from gateway.customers import CustomerDirectory
from readmodels.applier import ProjectionApplier
from readmodels.checkpoints import LeasedCheckpoint, LeaseLost
from readmodels.collections import ProjectionCollections, collection_name
from readmodels.port import ReadModelStore, RevisionConflict
from readmodels.projections import (
    PROJECTIONS_BY_NAME,
    UnexpectedGap,
    Updated,
    apply_in_memory,
)

Progress = Callable[[int, int], None]
"""Called with (events folded so far, events in the log as far as known)."""


class RebuildError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class RebuildReport:
    name: str
    collection: str
    previous_collection: str
    events: int
    documents: int
    caught_up_events: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def rebuild(
    name: str,
    event_store: EventStore,
    read_store: ReadModelStore,
    collections: ProjectionCollections,
    *,
    page_size: int = 5000,
    cache_documents: int = 200_000,
    progress: Progress | None = None,
) -> RebuildReport:
    projection = PROJECTIONS_BY_NAME.get(name)
    if projection is None:
        raise RebuildError(
            f"unknown projection {name!r}; choose from {', '.join(sorted(PROJECTIONS_BY_NAME))}"
        )
    lease = LeasedCheckpoint(read_store, f"rebuild-{name}", f"rebuild-{uuid.uuid4().hex[:8]}")
    if not await lease.try_acquire():
        raise RebuildError(f"a rebuild of {name} is already running")
    started = time.monotonic()
    try:
        current = await collections.read(name)
        version = current.version + 1
        target = collection_name(name, version)
        await read_store.drop_collection(target)  # leftovers of an interrupted rebuild
        await read_store.ensure_collection(target, projection.indexes)

        customers = CustomerDirectory(event_store)
        documents: dict[str, dict[str, Any]] = {}
        position, folded, written = 0, 0, set[str]()
        head = await event_store.head_position()
        while page := await event_store.read_all(after=position, limit=page_size):
            mapped = [await customers.integration_event(event) for event in page]
            events = [event for event in mapped if event is not None]
            missing = {projection.document_id(e) for e in events} - documents.keys()
            if missing:
                stored = await read_store.get_many(target, sorted(missing))
                documents.update({doc_id: doc.body for doc_id, doc in stored.items()})
            touched: set[str] = set()
            for event in events:
                # The log is read in commit order: a gap here is a bug (UnexpectedGap).
                if isinstance(apply_in_memory(projection, documents, event), Updated):
                    touched.add(projection.document_id(event))
            await read_store.put_many(target, {doc_id: documents[doc_id] for doc_id in touched})
            written |= touched
            if len(documents) > cache_documents:  # bounded memory: reload on demand
                documents.clear()
            position = page[-1].position
            folded += len(page)
            head = max(head, position)
            await lease.renew()
            if progress is not None:
                progress(folded, max(head, position))

        switched = await collections.switch(current, version)
        # Workers may still write to the old collection for as long as they cache the
        # pointer; catch up after that, from where the fold stopped. The fold read the
        # log to its end moments ago, so this is a short tail.
        try:
            await asyncio.sleep(collections.cache_seconds * 2)
            applier = ProjectionApplier(read_store, collections, projection)
            caught_up = 0
            while page := await event_store.read_all(after=position, limit=page_size):
                for stored_event in page:
                    live_event = await customers.integration_event(stored_event)
                    if live_event is not None:
                        await applier.apply(live_event, collection=target)
                position = page[-1].position
                caught_up += len(page)
                await lease.renew()
        except BaseException as failure:
            # Readers must not stay on a collection that misses events: point them back.
            with contextlib.suppress(Exception):
                await collections.switch(switched, current.version)
            if isinstance(failure, Exception):
                raise RebuildError(
                    f"{name}: catching up after the switch failed ({failure}); readers are "
                    f"back on {current.collection}"
                ) from failure
            raise

        for older in range(1, current.version):  # keep the previous version for a while
            await read_store.drop_collection(collection_name(name, older))
        return RebuildReport(
            name=name,
            collection=target,
            previous_collection=current.collection,
            events=folded,
            documents=len(written),
            caught_up_events=caught_up,
            seconds=time.monotonic() - started,
        )
    except (UnexpectedGap, LeaseLost, RevisionConflict) as problem:
        raise RebuildError(f"{name}: {problem}") from problem
    finally:
        await lease.release()


async def project_in_memory(
    projection_name: str, event_store: EventStore, *, page_size: int = 5000
) -> dict[str, dict[str, Any]]:
    """Every document of a projection, folded in memory from the whole log: what a fresh
    rebuild would write. For verification (tests, chaos checks), not for large stores."""
    projection = PROJECTIONS_BY_NAME[projection_name]
    customers = CustomerDirectory(event_store)
    documents: dict[str, dict[str, Any]] = {}
    position = 0
    while page := await event_store.read_all(after=position, limit=page_size):
        for stored_event in page:
            event = await customers.integration_event(stored_event)
            if event is not None:
                apply_in_memory(projection, documents, event)
        position = page[-1].position
    return documents
