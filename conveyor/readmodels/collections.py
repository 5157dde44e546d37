"""Which collection each projection currently reads and writes: `<name>_v<N>`.

A rebuild fills `<name>_v<N+1>` while readers and live updates keep using `_v<N>`, then
switches the pointer (one compare-and-set on one document). Workers cache the pointer
briefly; the rebuild's catch-up after the switch waits that long, so no live update that
went to the old collection is missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from conveyor.readmodels.port import ReadModelStore, RevisionConflict

PROJECTION_STATE = "conveyor_projections"


@dataclass(frozen=True, slots=True)
class ActiveCollection:
    name: str
    collection: str
    version: int
    rev: int


def collection_name(name: str, version: int) -> str:
    return f"{name}_v{version}"


class ProjectionCollections:
    def __init__(
        self,
        store: ReadModelStore,
        *,
        cache_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, ActiveCollection]] = {}

    async def active(self, name: str) -> ActiveCollection:
        cached = self._cache.get(name)
        if cached is not None and self._clock() - cached[0] < self.cache_seconds:
            return cached[1]
        # The time before the read: a switch may land while a slow read is under way, and
        # the rebuild's catch-up waits only `cache_seconds` from its switch.
        asked = self._clock()
        active = await self.read(name)
        self._cache[name] = (asked, active)
        return active

    async def read(self, name: str) -> ActiveCollection:
        """The pointer as stored now (creating version 1 on first use)."""
        while True:
            document = await self._store.get(PROJECTION_STATE, name)
            if document is not None:
                return ActiveCollection(
                    name,
                    document.body["collection"],
                    int(document.body["version"]),
                    document.rev,
                )
            collection = collection_name(name, 1)
            body = {"collection": collection, "version": 1}
            try:
                rev = await self._store.put(PROJECTION_STATE, name, body, expected_rev=0)
            except RevisionConflict:
                continue  # another process created it first: read theirs
            return ActiveCollection(name, collection, 1, rev)

    async def switch(self, current: ActiveCollection, version: int) -> ActiveCollection:
        """Point readers at version `version`; RevisionConflict if another switch won."""
        collection = collection_name(current.name, version)
        body = {"collection": collection, "version": version}
        asked = self._clock()
        rev = await self._store.put(PROJECTION_STATE, current.name, body, expected_rev=current.rev)
        switched = ActiveCollection(current.name, collection, version, rev)
        self._cache[current.name] = (asked, switched)
        return switched
