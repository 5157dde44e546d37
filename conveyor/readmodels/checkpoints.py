"""A named checkpoint held under a lease, stored as one read-model document.

Only the lease holder may move the checkpoint. Every save is a compare-and-set on the
document's revision and its owner, and taking over a lease bumps that revision and changes
the owner: so a holder that was paused past its lease and replaced is fenced off at its
next save (LeaseLost) instead of moving the checkpoint under its successor. The owner
matters where the revision alone is not enough: a revision comes round again when the
document is written anew (a write rolled back by a failover, the collection dropped).
Duplicates published by a fenced holder are possible; lost events are not, because the
checkpoint only ever moves after confirms.

Leases expire by the store's clock (`server_time`), never by a host's own: two hosts whose
clocks disagree by more than a lease would otherwise each see the other's lease as expired,
or never expired. The host's clock only measures time since the store's was last read, so
a constant error in it cancels out; the store's time is read again on every acquisition
and at least every `resync_seconds` while held.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from conveyor.readmodels.port import ReadModelStore, RevisionConflict

CHECKPOINTS = "conveyor_checkpoints"


class LeaseLost(Exception):
    """Another process took the lease: stop, and compete for it again."""


class LeasedCheckpoint:
    def __init__(
        self,
        store: ReadModelStore,
        name: str,
        owner: str,
        *,
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        resync_seconds: float = 60.0,
    ) -> None:
        self._store = store
        self.name = name
        self.owner = owner
        self.ttl = ttl
        self._clock = clock
        self._resync_seconds = resync_seconds
        self._offset: float | None = None  # store time minus host clock, when last read
        self._synced_at = 0.0
        self._rev = 0
        self.position = 0
        self.held = False

    async def _now(self, *, resync: bool = False) -> float:
        """The store's time now, read from the store or estimated from its last reading."""
        local = self._clock()
        if resync or self._offset is None or local - self._synced_at >= self._resync_seconds:
            self._offset = await self._store.server_time() - self._clock()
            self._synced_at = local = self._clock()
        return local + self._offset

    async def read(self) -> tuple[int, str | None, float]:
        """(position, owner, lease expiry) as stored, for status displays."""
        document = await self._store.get(CHECKPOINTS, self.name)
        if document is None:
            return 0, None, 0.0
        body = document.body
        return int(body["position"]), body.get("owner"), float(body.get("expires_at", 0))

    async def try_acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours."""
        now = await self._now(resync=True)
        document = await self._store.get(CHECKPOINTS, self.name)
        body: dict[str, Any]
        try:
            if document is None:
                body = {"owner": self.owner, "expires_at": now + self.ttl, "position": 0}
                self._rev = await self._store.put(CHECKPOINTS, self.name, body, expected_rev=0)
            else:
                holder = document.body.get("owner")
                if holder != self.owner and document.body["expires_at"] > now:
                    return False
                body = {**document.body, "owner": self.owner, "expires_at": now + self.ttl}
                self._rev = await self._store.put(
                    CHECKPOINTS,
                    self.name,
                    body,
                    expected_rev=document.rev,
                    where={"owner": holder},
                )
        except RevisionConflict:
            return False
        self.position = int(body["position"])
        self.held = True
        return True

    async def save(self, position: int) -> None:
        """Move the checkpoint (and renew the lease); LeaseLost if someone took over."""
        body = {
            "owner": self.owner,
            "expires_at": await self._now() + self.ttl,
            "position": position,
        }
        try:
            self._rev = await self._store.put(
                CHECKPOINTS, self.name, body, expected_rev=self._rev, where={"owner": self.owner}
            )
        except RevisionConflict:
            self.held = False
            raise LeaseLost(f"checkpoint {self.name!r} was taken over by another process") from None
        self.position = position

    async def renew(self) -> None:
        await self.save(self.position)

    async def release(self) -> None:
        """Let a successor take over at once instead of waiting out the lease."""
        if not self.held:
            return
        body = {"owner": self.owner, "expires_at": 0.0, "position": self.position}
        with contextlib.suppress(RevisionConflict):
            self._rev = await self._store.put(
                CHECKPOINTS, self.name, body, expected_rev=self._rev, where={"owner": self.owner}
            )
        self.held = False
