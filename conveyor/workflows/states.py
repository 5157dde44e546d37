"""A small read model of workflow states, one document per order (collection `workflows`),
written by the process manager after each input: how `conveyor status` and
`conveyor workflows stuck` find stuck workflows without scanning every `fulfilment-*` stream.

The document records the workflow version it shows, and a write is conditional on the
revision read, so an older state never overwrites a newer one. It is written after the
commands were sent; a crash before it is repaired by the redelivery, which writes it again.
The event store stays the truth: `conveyor workflows show` folds the stream itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.readmodels.port import Body, ReadModelStore, RevisionConflict
from domain.fulfilment.workflow import FulfilmentState

WORKFLOWS = "workflows"
ACTIVE = "active"
"""1 while the workflow runs (started, not terminal; one not started has no deadline: it
waits for an order confirmation that may never come). Stuck ones are active and past their
deadline: an equality plus a range, on one index."""
INDEXES = [(ACTIVE, "deadline_at"), ("status",)]


def document(state: FulfilmentState) -> Body:
    deadline = datetime.fromisoformat(state.deadline) if state.deadline else None
    return {
        "order_id": state.order_id,
        "version": state.version,
        "status": state.status.value,
        ACTIVE: 1 if state.started and not state.is_terminal else 0,
        "waiting_for": state.waiting_for,
        "deadline": state.deadline,
        "deadline_at": deadline.timestamp() if deadline else 0.0,
        "started_at": state.started_at,
        "cancel_reason": state.cancel_reason,
        "updated_at": datetime.now(UTC).isoformat(),
    }


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    order_id: str
    status: str
    waiting_for: str | None
    deadline: str | None
    cancel_reason: str | None
    version: int

    @classmethod
    def of(cls, body: Any) -> WorkflowSummary:
        return cls(
            body["order_id"],
            body["status"],
            body.get("waiting_for"),
            body.get("deadline"),
            body.get("cancel_reason"),
            int(body.get("version", 0)),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "status": self.status,
            "waiting_for": self.waiting_for,
            "deadline": self.deadline,
            "cancel_reason": self.cancel_reason,
            "version": self.version,
        }


class WorkflowStates:
    def __init__(self, store: ReadModelStore) -> None:
        self._store = store

    async def prepare(self) -> None:
        await self._store.ensure_collection(WORKFLOWS, INDEXES)

    async def record(self, state: FulfilmentState) -> None:
        if state.version == 0:
            return
        for _ in range(5):
            current = await self._store.get(WORKFLOWS, state.order_id)
            if current is not None and int(current.body.get("version", 0)) >= state.version:
                return  # as new or newer already
            try:
                await self._store.put(
                    WORKFLOWS,
                    state.order_id,
                    document(state),
                    expected_rev=current.rev if current is not None else 0,
                )
                return
            except RevisionConflict:
                continue

    async def get(self, order_id: str) -> WorkflowSummary | None:
        found = await self._store.get(WORKFLOWS, order_id)
        return WorkflowSummary.of(found.body) if found is not None else None

    async def stuck(
        self, now: datetime, margin: timedelta, *, limit: int = 100
    ) -> list[WorkflowSummary]:
        """Workflows still waiting `margin` past their deadline, oldest deadline first."""
        found = await self._store.find(
            WORKFLOWS,
            where={ACTIVE: 1},
            before=("deadline_at", (now - margin).timestamp()),
            order_by="deadline_at",
            limit=limit,
        )
        return [WorkflowSummary.of(document.body) for document in found]

    async def count(self, status: str | None = None) -> int:
        return await self._store.count(
            WORKFLOWS, where={"status": status} if status is not None else None
        )
