"""Applying one integration event to one projection's document in the store.

Load the document → the projection decides (updated / duplicate / gap) from what the
document says it has applied → write it back with compare-and-set on the revision read.
The guard and the update are one atomic single-document write; a concurrent writer makes
the write fail, and it is simply redone on the fresh document. Documents are serialised
per id within a process, so only other processes cause such retries.
"""

from __future__ import annotations

from typing import Any, Literal

from conveyor.aggregates import AGGREGATES
from conveyor.application.locks import KeyedLocks
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.port import ReadModelStore, RevisionConflict
from conveyor.readmodels.projections import Duplicate, Gap, Projection, Updated
from messaging.contracts.orders import OrderEvent as IntegrationEvent

Result = Literal["updated", "duplicate"]


class ProjectionGap(Exception):
    """An event arrived before an earlier one of the same order: retry it later."""


def feeds(projection: str, event: Any) -> bool:
    """Does `event` feed the read model `projection`? Its aggregate's definition lists the
    read models it feeds (rebuilds and the reconciler read every aggregate's events)."""
    definition = AGGREGATES.of_event_type(event.type)
    return definition is not None and projection in definition.read_models


class ProjectionApplier:
    def __init__(
        self,
        store: ReadModelStore,
        collections: ProjectionCollections,
        projection: Projection,
        *,
        conflict_attempts: int = 20,
    ) -> None:
        self._store = store
        self._collections = collections
        self.projection = projection
        self._conflict_attempts = conflict_attempts
        self._locks = KeyedLocks()

    async def ensure_collection(self) -> None:
        """Create the active collection and its indexes if this is the first run."""
        active = await self._collections.active(self.projection.name)
        await self._store.ensure_collection(active.collection, self.projection.indexes)

    async def apply(self, event: IntegrationEvent, collection: str | None = None) -> Result:
        doc_id = self.projection.document_id(event)
        # The document's lock comes before anything that can suspend, so deliveries of one
        # document apply in the order they arrived (asyncio locks are FIFO). Looking up the
        # collection first let a later event overtake an earlier one whenever the cached
        # pointer expired: a spurious gap, sent round the retry ladder (found by chaos/).
        async with self._locks.hold(doc_id):
            if collection is None:
                collection = (await self._collections.active(self.projection.name)).collection
            for _ in range(self._conflict_attempts):
                document = await self._store.get(collection, doc_id)
                outcome = self.projection.apply(document.body if document else None, event)
                if isinstance(outcome, Duplicate):
                    return "duplicate"
                if isinstance(outcome, Gap):
                    raise ProjectionGap(
                        f"{self.projection.name}/{doc_id}: {outcome.reason} (event "
                        f"{event.event_id}, {event.type} v{event.version})"
                    )
                assert isinstance(outcome, Updated)
                try:
                    await self._store.put(
                        collection,
                        doc_id,
                        outcome.body,
                        expected_rev=document.rev if document else 0,
                    )
                except RevisionConflict:
                    continue
                return "updated"
        raise RevisionConflict(collection, doc_id, -1)
