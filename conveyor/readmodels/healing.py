"""Filling from the event store what the broker never delivered to a projection.

The broker is the fast path to a read model, not the source of truth. An event can fail to
reach a projection queue for good: the queue was deleted (its messages with it) and
recreated while the gateway published, or any other transport loss. Since the gateway's
checkpoint has moved on, no republish will come. Two things heal that from the store:

* **A gap heals at once.** When version N of an order arrives and the read model lacks an
  earlier version, the consumer reads the order's stream and applies the missing versions,
  then N. A copy still on its way (only reordered, not lost) then arrives as a duplicate.
* **A loss with no later event makes no gap** — a lost last event, or the lost first event
  of an order that sees nothing more. The reconciler catches those: it follows the global
  log under a lease, behind what the gateway had confirmed `settle` seconds earlier, so it
  seldom races copies still in flight (and harmlessly when it does). For each order of each
  page it applies the order's latest event of the page: normally a duplicate (one
  read-model read per order), else applied or, on a gap, filled as above. Its position is
  saved only after a whole page.

Both write through the same ProjectionApplier and its version guard as the consumers, so
whatever arrives later by the broker is a duplicate, never a second application.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from conveyor.aggregates import AGGREGATES
from conveyor.application.aggregates import aggregate_version, is_marker
from conveyor.eventstore.port import EventStore, RecordedEvent
from conveyor.observability.metrics import PROJECTION_HEALED
from conveyor.readmodels.applier import ProjectionApplier, ProjectionGap, feeds
from conveyor.readmodels.checkpoints import LeasedCheckpoint, LeaseLost
from conveyor.readmodels.projections import ContractViolation
from messaging.customers import IntegrationMapper
from messaging.integration_events import IntegrationEvent, NotAnIntegrationEvent
from messaging.integration_events import to_integration_event as public_form

logger = logging.getLogger("conveyor.projections")

RECONCILER_CHECKPOINT = "projection-reconciler"


class GapFiller:
    """Applies an order's missing versions from the event store."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    async def fill(self, applier: ProjectionApplier, event: IntegrationEvent) -> int:
        """Apply every version of `event`'s order up to `event` (inclusive) that the read
        model lacks; returns how many were applied. Raises ProjectionGap if the store does
        not hold them (yet): the caller's retry ladder takes over."""
        definition = AGGREGATES.of_event_type(event.type)
        if definition is None:
            raise NotAnIntegrationEvent(f"no registered aggregate publishes {event.type}")
        stream_id = definition.stream(event.aggregate_id)
        # Versions are aggregate versions (domain events only): a stream holding rejection
        # markers is longer than the version says, so it is then read to its end.
        stored = await self._store.read_stream(stream_id, to_version=event.version)
        if any(is_marker(e) for e in stored):
            stored = await self._store.read_stream(stream_id)
        domain = [e for e in stored if not is_marker(e) and aggregate_version(e) <= event.version]
        sticky = {name: getattr(event, name) for name in definition.contract.sticky}
        healed = 0
        for recorded in domain:
            try:
                missing = public_form(recorded, definition, sticky)
            except NotAnIntegrationEvent:  # not a public event: nothing to project
                continue
            if await applier.apply(missing) == "updated":
                healed += 1
        held = aggregate_version(domain[-1]) if domain else 0
        if held < event.version:
            raise ProjectionGap(
                f"{applier.projection.name}: the event store holds {definition.name} "
                f"{event.aggregate_id} only up to version {held}, not {event.version}"
            )
        if healed:
            PROJECTION_HEALED.labels(applier.projection.name).inc(healed)
            logger.warning(
                "%s: filled %d missing event(s) of %s from the event store (up to v%d)",
                applier.projection.name,
                healed,
                event.aggregate_id,
                event.version,
            )
        return healed


class ProjectionReconciler:
    """Follows the global log behind the projections and heals what they never got."""

    def __init__(
        self,
        store: EventStore,
        appliers: Sequence[ProjectionApplier],
        checkpoint: LeasedCheckpoint,
        gateway: LeasedCheckpoint,
        *,
        settle: float = 5.0,
        page_size: int = 500,
    ) -> None:
        self._store = store
        self._appliers = list(appliers)
        self._checkpoint = checkpoint
        self._gateway = gateway
        self._settle = settle
        self._page_size = page_size
        self._filler = GapFiller(store)
        self._customers = IntegrationMapper(store, AGGREGATES)
        self._gateway_samples: deque[tuple[float, int]] = deque()
        self.healed = 0
        self.reconciled_to = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile until `stop` is set; never raises for a transient failure."""
        while not stop.is_set():
            try:
                if await self._checkpoint.try_acquire():
                    await self.reconcile_once()
            except LeaseLost:
                pass
            except Exception as error:  # a store is down: try again next round
                logger.warning("projection reconciler paused: %s: %s", type(error).__name__, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(self._settle / 2, 0.05))
        with contextlib.suppress(Exception):
            await self._checkpoint.release()

    async def bound(self) -> int:
        """How far the log may be reconciled now: what the gateway had confirmed at least
        `settle` seconds ago. Not bounded by the projections' progress: a projection whose
        queue was emptied by its deletion may never see another event, and applying ahead of
        a backlog is harmless (the queued copies become duplicates)."""
        now = time.monotonic()
        position, _, _ = await self._gateway.read()
        self._gateway_samples.append((now, position))
        while len(self._gateway_samples) > 1 and now - self._gateway_samples[1][0] >= self._settle:
            self._gateway_samples.popleft()
        sampled_at, confirmed = self._gateway_samples[0]
        if now - sampled_at < self._settle:
            return self._checkpoint.position
        return confirmed

    async def reconcile_once(self) -> None:
        bound = await self.bound()
        position = self._checkpoint.position
        while position < bound:
            page = await self._store.read_all(after=position, limit=self._page_size)
            page = [event for event in page if event.position <= bound]
            if not page:
                break
            await self._reconcile_page(page)
            position = page[-1].position
            await self._checkpoint.save(position)
            self.reconciled_to = position
        if position == self._checkpoint.position:
            await self._checkpoint.renew()

    async def _reconcile_page(self, page: Sequence[RecordedEvent]) -> None:
        latest: dict[str, Any] = {}
        for recorded in page:
            event = await self._customers.integration_event(recorded)
            if event is not None:  # a page is in log order: the last one of a stream wins
                latest[recorded.stream_id] = event
        for applier in self._appliers:
            for event in latest.values():
                if not feeds(applier.projection.name, event):
                    continue
                try:
                    if await applier.apply(event) == "updated":
                        self.healed += 1
                        PROJECTION_HEALED.labels(applier.projection.name).inc()
                        logger.warning(
                            "%s: applied %s v%d of %s from the event store: the "
                            "broker never delivered it",
                            applier.projection.name,
                            event.type,
                            event.version,
                            event.aggregate_id,
                        )
                except ProjectionGap:
                    try:
                        self.healed += await self._filler.fill(applier, event)
                    except ContractViolation as violation:
                        self._cannot_apply(applier, event, violation)
                except ContractViolation as violation:
                    self._cannot_apply(applier, event, violation)

    @staticmethod
    def _cannot_apply(
        applier: ProjectionApplier, event: IntegrationEvent, violation: ContractViolation
    ) -> None:
        """An event the projection refuses (a bug upstream): its broker delivery is in the
        dead-letter queue, where an operator sees it; holding the reconciler on this page
        for ever would stop it healing anything else."""
        logger.warning(
            "%s: reconciler passes over %s v%d of %s: %s",
            applier.projection.name,
            event.type,
            event.version,
            event.aggregate_id,
            violation,
        )
