"""Rebuilding a read model from the event store's global log (never from the broker).

Blue/green: the events are folded into a fresh collection `<name>_v<N+1>` while readers and
live updates keep using `_v<N>`; then the pointer switches in one compare-and-set, and a
catch-up pass applies — with the same guards as live updates — whatever was stored while
the switch happened. Live updates that reach the new collection early are duplicates to the
catch-up, and events the catch-up has not reached yet are gaps to live updates, retried by
their ladder: either way, every event lands exactly once.

Several projections rebuild together in one pass over the log (`rebuild_many`,
`rebuild_all`), but their pointers switch one after another, each its own compare-and-set,
not atomically: for a moment a reader can find one projection on its new version and
another still on its old one. Each version is complete and guarded on its own, and every
query reads one projection, so no answer mixes versions; two queries made in that moment,
to two projections, can disagree the way any two read models lagging differently can. The
fold runs in memory: `LogFold` folds each stored event once into its
order's state, for all three projections, and every final document is written once, in
large bulk upserts, its indexes built after. An event `LogFold` does not handle (or too
many orders for memory) hands the rest of the log over to the projections themselves:
page by page, each event mapped once to its integration event and applied to the
documents it touches (loaded in one request per projection), written back in bulk.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from conveyor.aggregates import AGGREGATES
from conveyor.aggregates.orders import ORDERS
from conveyor.eventstore.port import EventStore, EventStoreUnavailable, RecordedEvent
from conveyor.readmodels.applier import ProjectionApplier, feeds
from conveyor.readmodels.checkpoints import CHECKPOINTS, LeasedCheckpoint, LeaseLost
from conveyor.readmodels.collections import ActiveCollection, ProjectionCollections, collection_name
from conveyor.readmodels.port import ReadModelStore, ReadStoreUnavailable, RevisionConflict
from conveyor.readmodels.projections import (
    PROJECTIONS,
    PROJECTIONS_BY_NAME,
    STOCK_LEVELS,
    LogFold,
    Projection,
    UnexpectedGap,
    Updated,
    apply_in_memory,
    documents_json,
)
from messaging.customers import IntegrationMapper

logger = logging.getLogger("conveyor.rebuild")

Progress = Callable[[int, int], None]
"""Called with (events folded so far, events in the log as far as known). Positions are
not event counts (KurrentDB's are byte offsets), so the second is extrapolated from how far
through the log the fold is: exact where positions count events, as on SQLite."""

TRANSIENT: tuple[type[BaseException], ...] = (
    EventStoreUnavailable,
    ReadStoreUnavailable,
    ConnectionError,
    TimeoutError,
)
"""Failures of a store, not of the rebuild: the catch-up waits them out (an election)."""


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
    resumed: bool = False
    """Only the catch-up of an earlier, interrupted rebuild ran (no fold)."""

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def rebuild(
    name: str,
    event_store: EventStore,
    read_store: ReadModelStore,
    collections: ProjectionCollections,
    *,
    page_size: int = 5_000,
    cache_documents: int = 200_000,
    progress: Progress | None = None,
) -> RebuildReport:
    """Rebuild one projection (see `rebuild_many`)."""
    (report,) = await rebuild_many(
        [name],
        event_store,
        read_store,
        collections,
        page_size=page_size,
        cache_documents=cache_documents,
        progress=progress,
    )
    return report


async def rebuild_all(
    event_store: EventStore,
    read_store: ReadModelStore,
    collections: ProjectionCollections,
    *,
    progress: Progress | None = None,
) -> list[RebuildReport]:
    """Rebuild every projection in one pass over the log."""
    return await rebuild_many(
        [p.name for p in PROJECTIONS], event_store, read_store, collections, progress=progress
    )


async def rebuild_many(
    names: Sequence[str],
    event_store: EventStore,
    read_store: ReadModelStore,
    collections: ProjectionCollections,
    *,
    page_size: int = 5_000,
    cache_documents: int = 200_000,
    fold_orders: int = 500_000,
    progress: Progress | None = None,
    lease_seconds: float = 10.0,
    catch_up_patience: float = 600.0,
) -> list[RebuildReport]:
    """Rebuild the named projections together: one pass over the log feeds them all.

    A projection whose previous rebuild switched readers over but did not finish catching
    up (killed, or a store away for longer than `catch_up_patience` seconds) only has that
    catch-up resumed, from its recorded position: its readers already use the new version,
    which must not lose the updates live workers have made to it since.

    The log is folded in memory (`LogFold`: one state per order) and every final document
    is written once, in bulk. When the fast fold meets an event it does not handle, or holds
    `fold_orders` orders, it writes what it has and the projections themselves fold the
    rest, page by page, keeping at most `cache_documents` documents per projection."""
    projections: list[Projection] = []
    for name in dict.fromkeys(names):
        projection = PROJECTIONS_BY_NAME.get(name)
        if projection is None:
            raise RebuildError(
                f"unknown projection {name!r}; choose from {', '.join(sorted(PROJECTIONS_BY_NAME))}"
            )
        projections.append(projection)
    if not projections:
        raise RebuildError("no projection to rebuild")
    owner = f"rebuild-{uuid.uuid4().hex[:8]}"
    # Concurrent requests, not one transaction: each lease is its own compare-and-set (the
    # SQLite store may commit them together, MongoDB does not), so two rebuilds of
    # overlapping sets can each get some; both then fail, and release what they got.
    leases = [
        LeasedCheckpoint(read_store, f"rebuild-{p.name}", owner, ttl=lease_seconds)
        for p in projections
    ]
    try:
        acquired = await asyncio.gather(*(lease.try_acquire() for lease in leases))
        for projection, held in zip(projections, acquired, strict=True):
            if not held:
                raise RebuildError(f"a rebuild of {projection.name} is already running")
        async with _Renewal(leases) as renewal:
            unfinished = await _unfinished_catch_ups(projections, read_store, collections)
            reports = []
            if unfinished:
                reports = await _resume_catch_ups(
                    unfinished,
                    event_store,
                    read_store,
                    collections,
                    page_size=page_size,
                    patience=catch_up_patience,
                )
            resumed = {report.name for report in reports}
            rest = [p for p in projections if p.name not in resumed]
            if rest:
                reports += await _rebuild_held(
                    rest,
                    renewal,
                    event_store,
                    read_store,
                    collections,
                    page_size=page_size,
                    cache_documents=cache_documents,
                    fold_orders=fold_orders,
                    progress=progress,
                    catch_up_patience=catch_up_patience,
                )
            order = [p.name for p in projections]
            return sorted(reports, key=lambda report: order.index(report.name))
    except (UnexpectedGap, LeaseLost, RevisionConflict) as problem:
        which = (
            problem.projection
            if isinstance(problem, UnexpectedGap)
            else ", ".join(p.name for p in projections)
        )
        raise RebuildError(f"{which}: {problem}") from problem
    finally:
        await asyncio.gather(*(lease.release() for lease in leases))


class _Renewal:
    """Keeps the leases renewed every quarter of their time from a task of its own: a page,
    an index build or the catch-up's wait may each outlast a lease, and a rebuild whose
    lease expired could find a second one working beside it. A renewal that fails for a
    transient reason is tried again at the next tick (the lease holds until it expires);
    LeaseLost stops the rebuild, and leaves the block as LeaseLost."""

    def __init__(self, leases: Sequence[LeasedCheckpoint]) -> None:
        self._leases = leases
        self._every = min(lease.ttl for lease in leases) / 4
        self.lost: LeaseLost | None = None
        self._worker: asyncio.Task[Any] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # One renewal at a time: two racing compare-and-sets of one lease would lose it.
        self._renewing = asyncio.Lock()

    async def __aenter__(self) -> Self:
        self._worker = asyncio.current_task()
        self._renewer = asyncio.create_task(self._renew_on_time(), name="rebuild-lease")
        return self

    async def _renew_on_time(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._every)
            if self._stopping.is_set():
                return
            try:
                await self._renew()
            except LeaseLost as lost:
                self.lost = lost
                assert self._worker is not None
                self._worker.cancel()
                return
            except Exception as failure:
                logger.warning("could not renew the rebuild lease (retrying): %s", failure)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._renewer is not None
        assert self._worker is not None
        # Not cancelled mid-write: a renewal the store carries out after its caller gave
        # up would leave the lease's revision stale, and its release would then fail.
        self._stopping.set()
        await asyncio.shield(self._renewer)
        if self.lost is not None and exc_type is asyncio.CancelledError:
            self._worker.uncancel()
            raise self.lost from exc

    async def _renew(self) -> None:
        async with self._renewing:
            await asyncio.gather(*(lease.renew() for lease in self._leases))

    async def __call__(self, *, force: bool = False) -> None:
        """A checkpoint for long loops: raises LeaseLost once the lease is gone. With
        `force`, renews now: before a step that holds SQLite's write lock for a while (an
        index build), during which the background renewal would wait its turn."""
        if self.lost is not None:
            raise self.lost
        if force:
            try:
                await self._renew()
            except LeaseLost as lost:
                self.lost = lost
                raise


class _CatchUpRecord:
    """Where a switched projection's catch-up stands, in one document next to the leases:
    a rebuild killed after the switch leaves it pending, and the next one resumes it."""

    def __init__(self, store: ReadModelStore, name: str) -> None:
        self._store = store
        self.name = name
        self.doc_id = f"rebuild-{name}-catch-up"
        self._rev = 0
        self.collection = ""
        self.after = 0
        self.pending = False

    async def load(self) -> Self:
        document = await self._store.get(CHECKPOINTS, self.doc_id)
        if document is not None:
            self._rev = document.rev
            self.collection = document.body["collection"]
            self.after = int(document.body["after"])
            self.pending = bool(document.body["pending"])
        return self

    async def save(self, collection: str, after: int, *, pending: bool = True) -> None:
        body = {"collection": collection, "after": after, "pending": pending}
        # Only the lease holder writes it: a conflict means the lease was lost.
        self._rev = await self._store.put(CHECKPOINTS, self.doc_id, body, expected_rev=self._rev)
        self.collection, self.after, self.pending = collection, after, pending


async def _unfinished_catch_ups(
    projections: Sequence[Projection],
    read_store: ReadModelStore,
    collections: ProjectionCollections,
) -> list[tuple[Projection, _CatchUpRecord, ActiveCollection]]:
    """The projections whose readers were switched to a version still catching up."""
    unfinished = []
    for projection in projections:
        record = await _CatchUpRecord(read_store, projection.name).load()
        active = await collections.read(projection.name)
        if record.pending and record.collection == active.collection:
            unfinished.append((projection, record, active))
    return unfinished


async def _resume_catch_ups(
    unfinished: Sequence[tuple[Projection, _CatchUpRecord, ActiveCollection]],
    event_store: EventStore,
    read_store: ReadModelStore,
    collections: ProjectionCollections,
    *,
    page_size: int,
    patience: float,
) -> list[RebuildReport]:
    started = time.monotonic()
    reports = []
    for projection, record, active in unfinished:
        logger.warning(
            "%s: resuming the catch-up of %s after position %d (an earlier rebuild was "
            "interrupted after switching readers)",
            projection.name,
            active.collection,
            record.after,
        )
        caught_up = await _catch_up(
            [projection],
            [active.collection],
            [record],
            record.after,
            event_store,
            read_store,
            collections,
            page_size=page_size,
            patience=patience,
        )
        await _drop_older(read_store, projection, active.version - 1)
        reports.append(
            RebuildReport(
                name=projection.name,
                collection=active.collection,
                previous_collection=collection_name(projection.name, active.version - 1),
                events=0,
                documents=0,
                caught_up_events=caught_up,
                seconds=time.monotonic() - started,
                resumed=True,
            )
        )
    return reports


async def _catch_up(
    projections: Sequence[Projection],
    targets: Sequence[str],
    records: Sequence[_CatchUpRecord],
    position: int,
    event_store: EventStore,
    read_store: ReadModelStore,
    collections: ProjectionCollections,
    *,
    page_size: int,
    patience: float,
) -> int:
    """Apply the log after `position` to the switched-to `targets` with the live guards,
    recording the position after every page; a store away (an election, a locked file) is
    waited out for up to `patience` seconds. Returns the events read."""
    appliers = [ProjectionApplier(read_store, collections, p) for p in projections]
    customers = IntegrationMapper(event_store, AGGREGATES)
    caught_up = 0
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT),
        wait=wait_exponential_jitter(multiplier=0.2, max=10.0),
        stop=stop_after_delay(patience),
        before_sleep=lambda state: logger.warning(
            "catching up %s: a store is away, retrying: %s",
            ", ".join(targets),
            state.outcome.exception() if state.outcome else None,
        ),
        reraise=True,
    ):
        with attempt:
            while page := await event_store.read_all(after=position, limit=page_size):
                for stored_event in page:
                    live_event = await customers.integration_event(stored_event)
                    if live_event is not None:
                        for applier, target in zip(appliers, targets, strict=True):
                            if feeds(applier.projection.name, live_event):
                                await applier.apply(live_event, collection=target)
                position = page[-1].position
                caught_up += len(page)
                for record, target in zip(records, targets, strict=True):
                    await record.save(target, position)
            for record, target in zip(records, targets, strict=True):
                await record.save(target, position, pending=False)
    return caught_up


async def _drop_older(read_store: ReadModelStore, projection: Projection, keep: int) -> None:
    """Drop the versions before `keep` (the previous version stays for a while)."""
    for older in range(1, keep):
        await read_store.drop_collection(collection_name(projection.name, older))


async def _rebuild_held(
    projections: Sequence[Projection],
    renew: _Renewal,
    event_store: EventStore,
    read_store: ReadModelStore,
    collections: ProjectionCollections,
    *,
    page_size: int,
    cache_documents: int,
    fold_orders: int,
    progress: Progress | None,
    catch_up_patience: float,
) -> list[RebuildReport]:
    started = time.monotonic()
    currents = await asyncio.gather(*(collections.read(p.name) for p in projections))
    targets = [
        collection_name(p.name, c.version + 1) for p, c in zip(projections, currents, strict=True)
    ]
    # Leftovers of an interrupted rebuild go; the indexes come once the collections are
    # filled (faster in bulk).
    await asyncio.gather(*(read_store.drop_collection(target) for target in targets))
    await asyncio.gather(*(read_store.ensure_collection(target) for target in targets))

    customers = IntegrationMapper(event_store, AGGREGATES)
    written: list[set[str]] = [set() for _ in projections]
    position, folded = 0, 0
    head = await event_store.head_position()
    fast: LogFold | None = LogFold()
    documents: list[dict[str, dict[str, Any]]] = [{} for _ in projections]
    # Read ahead: the store fetches the next page while this one is folded.
    ahead = asyncio.ensure_future(event_store.read_all(after=position, limit=page_size))
    try:
        while page := await ahead:
            ahead = asyncio.ensure_future(
                event_store.read_all(after=page[-1].position, limit=page_size)
            )
            start = 0
            if fast is not None:
                with paused_gc():
                    start, foreign = _fast_fold(fast, page)
                for stored_event in foreign:  # no contract: skipped (and logged) as always
                    await customers.integration_event(stored_event)
                if start < len(page) or len(fast.orders) >= fold_orders:
                    await _write_fold(
                        fast, projections, targets, read_store, written, customers, renew
                    )
                    fast = None
            if fast is None and start < len(page):
                await _fold_page(
                    page[start:], projections, targets, read_store, customers, documents, written
                )
                for cache in documents:
                    if len(cache) > cache_documents:  # bounded memory: reload on demand
                        cache.clear()
            position = page[-1].position
            folded += len(page)
            head = max(head, position)
            await renew()
            if progress is not None:
                progress(folded, max(folded, round(folded * head / position)))
    finally:
        if not ahead.done():
            ahead.cancel()
        # Wait for the read-ahead without taking on its outcome; a cancellation of this
        # task itself must still propagate (suppressing BaseException here swallowed it).
        await asyncio.wait([ahead])
        if not ahead.cancelled():
            ahead.exception()  # retrieved: a failed read-ahead is not logged as unhandled
    if fast is not None:
        await _write_fold(fast, projections, targets, read_store, written, customers, renew)
        fast = None  # the states can go before the catch-up
    # One index per transaction, one after the other: an index build holds SQLite's write
    # lock while it runs, so other processes' writes go in between, and the leases are
    # renewed before each (a build on a large collection can take a while).
    for projection, target in zip(projections, targets, strict=True):
        for fields in projection.indexes:
            await renew(force=True)
            await read_store.ensure_collection(target, (fields,))
    await renew(force=True)

    # From the switch on, live workers write only to the new versions: readers must never
    # be pointed back at the old ones, which lack those writes. So the catch-up position is
    # recorded (before the switch, and after every page) and a failed or killed catch-up is
    # resumed by the next rebuild, never undone.
    records = [await _CatchUpRecord(read_store, p.name).load() for p in projections]
    for record, target in zip(records, targets, strict=True):
        await record.save(target, position)
    for current in currents:
        await collections.switch(current, current.version + 1)
    try:
        # Workers may still write to the old collections for as long as they cache the
        # pointer; catch up after that, from where the fold stopped. The fold read the
        # log to its end moments ago, so this is a short tail.
        await asyncio.sleep(collections.cache_seconds * 2)
        caught_up = await _catch_up(
            projections,
            targets,
            records,
            position,
            event_store,
            read_store,
            collections,
            page_size=page_size,
            patience=catch_up_patience,
        )
    except Exception as failure:
        names = ", ".join(p.name for p in projections)
        after = min(record.after for record in records)
        raise RebuildError(
            f"{names}: catching up after the switch failed ({failure}); readers stay on "
            f"{', '.join(targets)} (the previous versions lack the updates made since); "
            f"the catch-up resumes after position {after} when this rebuild runs again"
        ) from failure

    for projection, current in zip(projections, currents, strict=True):
        await _drop_older(read_store, projection, current.version)  # keep the previous one
    seconds = time.monotonic() - started
    return [
        RebuildReport(
            name=projection.name,
            collection=target,
            previous_collection=current.collection,
            events=folded,
            documents=len(ids),
            caught_up_events=caught_up,
            seconds=seconds,
        )
        for projection, target, current, ids in zip(
            projections, targets, currents, written, strict=True
        )
    ]


def _fast_fold(fast: LogFold, page: Sequence[RecordedEvent]) -> tuple[int, list[RecordedEvent]]:
    """Fold `page` into `fast`: (the index of the first event left to the projections,
    len(page) for none; the events before it that have no integration contract)."""
    foreign: list[RecordedEvent] = []
    for index, stored_event in enumerate(page):
        publisher = AGGREGATES.publisher_of(stored_event)
        if publisher is None:
            foreign.append(stored_event)
        elif not publisher.read_models:
            continue  # feeds no read model (Payment)
        elif publisher is ORDERS:
            if not fast.add(stored_event):
                return index, foreign
        elif STOCK_LEVELS.name not in publisher.read_models or not fast.add_stock(stored_event):
            return index, foreign
    return len(page), foreign


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection during a synchronous stretch that allocates many
    objects and frees none (a fold, a render): collections would only rescan them again and
    again. Never held across an await, so no other task runs meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_WRITE_BATCH = 5_000
_WRITES_IN_FLIGHT = 4


async def _write_fold(
    fast: LogFold,
    projections: Sequence[Projection],
    targets: Sequence[str],
    read_store: ReadModelStore,
    written: Sequence[set[str]],
    customers: IntegrationMapper,
    renew: _Renewal,
) -> None:
    """Write the fast fold's documents in large batches, a few in flight at a time (the
    store writes one while the next is rendered), renewing the leases as it goes; then
    tell the directory the customers the fold saw."""
    writes: list[asyncio.Future[None]] = []
    try:
        # A store that takes JSON text gets it built directly (documents_json).
        put_json = getattr(read_store, "put_many_json", None)
        for projection, target, ids in zip(projections, targets, written, strict=True):
            with paused_gc():
                if put_json is not None:
                    bodies: list[tuple[str, Any]] = list(
                        documents_json(fast, projection.name).items()
                    )
                else:
                    bodies = list(fast.documents(projection.name).items())
            ids.update(doc_id for doc_id, _ in bodies)
            for offset in range(0, len(bodies), _WRITE_BATCH):
                batch = dict(bodies[offset : offset + _WRITE_BATCH])
                put = put_json if put_json is not None else read_store.put_many
                writes.append(asyncio.ensure_future(put(target, batch)))
                # Let the store start writing this batch while the next one is rendered.
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                if len(writes) > _WRITES_IN_FLIGHT:
                    await _finished(writes[-1 - _WRITES_IN_FLIGHT])
                await renew()
        for write in writes:
            await _finished(write)
    finally:
        # A failed batch: the others must not outlive the rebuild (and its leases), and
        # cancelling one cannot unsend it. At most _WRITES_IN_FLIGHT are left to wait for.
        if writes:
            await asyncio.wait(writes)
            for write in writes:
                if not write.cancelled():
                    write.exception()  # retrieved: the first failure is the one raised
    for order_id, customer in fast.customers().items():
        customers.remember(ORDERS.stream(order_id), {"customer_id": customer})


async def _finished(write: asyncio.Future[None]) -> None:
    """Wait for a batch and raise its failure; a cancelled rebuild does not cancel the
    batch (as awaiting it directly would): it is waited for, below."""
    await asyncio.wait([write])
    write.result()


async def _fold_page(
    page: Sequence[RecordedEvent],
    projections: Sequence[Projection],
    targets: Sequence[str],
    read_store: ReadModelStore,
    customers: IntegrationMapper,
    documents: Sequence[dict[str, dict[str, Any]]],
    written: Sequence[set[str]],
) -> None:
    """The projections themselves fold a page: each event mapped once, applied to the
    documents it touches (loaded in one request per projection), written back in bulk."""
    mapped = [await customers.integration_event(event) for event in page]
    for projection, target, cache, ids in zip(
        projections, targets, documents, written, strict=True
    ):
        events = [e for e in mapped if e is not None and feeds(projection.name, e)]
        missing = {projection.document_id(e) for e in events} - cache.keys()
        if missing:
            stored = await read_store.get_many(target, sorted(missing))
            cache.update({doc_id: doc.body for doc_id, doc in stored.items()})
        touched: set[str] = set()
        for event in events:
            # The log is read in commit order: a gap here is a bug (UnexpectedGap).
            if isinstance(apply_in_memory(projection, cache, event), Updated):
                touched.add(projection.document_id(event))
        await read_store.put_many(target, {doc_id: cache[doc_id] for doc_id in touched})
        ids |= touched


async def project_in_memory(
    projection_name: str, event_store: EventStore, *, page_size: int = 5000
) -> dict[str, dict[str, Any]]:
    """Every document of a projection, folded in memory from the whole log: what a fresh
    rebuild would write. For verification (tests, chaos checks), not for large stores."""
    projection = PROJECTIONS_BY_NAME[projection_name]
    customers = IntegrationMapper(event_store, AGGREGATES)
    documents: dict[str, dict[str, Any]] = {}
    position = 0
    while page := await event_store.read_all(after=position, limit=page_size):
        for stored_event in page:
            event = await customers.integration_event(stored_event)
            if event is not None and feeds(projection_name, event):
                apply_in_memory(projection, documents, event)
        position = page[-1].position
    return documents
