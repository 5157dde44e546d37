"""A named checkpoint held under a lease, stored as one read-model document.

Only the lease holder may move the checkpoint. Every save is a compare-and-set on the
document's revision, and taking over a lease bumps that revision: so a holder that was
paused past its lease and replaced is fenced off at its next save (LeaseLost) instead of
moving the checkpoint under its successor. Duplicates published by a fenced holder are
possible; lost events are not, because the checkpoint only ever moves after confirms.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from readmodels.port import ReadModelStore, RevisionConflict

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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.name = name
        self.owner = owner
        self.ttl = ttl
        self._clock = clock
        self._rev = 0
        self.position = 0
        self.held = False

    async def read(self) -> tuple[int, str | None, float]:
        """(position, owner, lease expiry) as stored, for status displays."""
        document = await self._store.get(CHECKPOINTS, self.name)
        if document is None:
            return 0, None, 0.0
        body = document.body
        return int(body["position"]), body.get("owner"), float(body.get("expires_at", 0))

    async def try_acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours."""
        now = self._clock()
        document = await self._store.get(CHECKPOINTS, self.name)
        body: dict[str, Any]
        if document is None:
            body = {"owner": self.owner, "expires_at": now + self.ttl, "position": 0}
            expected = 0
        else:
            if document.body.get("owner") != self.owner and document.body["expires_at"] > now:
                return False
            body = {**document.body, "owner": self.owner, "expires_at": now + self.ttl}
            expected = document.rev
        try:
            self._rev = await self._store.put(CHECKPOINTS, self.name, body, expected_rev=expected)
        except RevisionConflict:
            return False
        self.position = int(body["position"])
        self.held = True
        return True

    async def save(self, position: int) -> None:
        """Move the checkpoint (and renew the lease); LeaseLost if someone took over."""
        body = {
            "owner": self.owner,
            "expires_at": self._clock() + self.ttl,
            "position": position,
        }
        try:
            self._rev = await self._store.put(CHECKPOINTS, self.name, body, expected_rev=self._rev)
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
            self._rev = await self._store.put(CHECKPOINTS, self.name, body, expected_rev=self._rev)
        self.held = False
