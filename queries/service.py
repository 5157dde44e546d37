"""Query handlers over the read-model port (and the event store, for temporal queries)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from application.history import OrderHistory, order_history
from eventstore.port import EventStore
from eventstore.serialization import format_time
from readmodels.collections import ProjectionCollections
from readmodels.port import ReadModelStore

OrderStatus = Literal["pending", "confirmed", "cancelled"]


class OrderQueries:
    def __init__(
        self,
        read_store: ReadModelStore,
        collections: ProjectionCollections,
        event_store: EventStore | None = None,
    ) -> None:
        self._read_store = read_store
        self._collections = collections
        self._event_store = event_store

    async def _get(self, projection: str, doc_id: str) -> dict[str, Any] | None:
        active = await self._collections.active(projection)
        document = await self._read_store.get(active.collection, doc_id)
        return document.body if document else None

    async def order(self, order_id: str) -> dict[str, Any] | None:
        """The order summary: customer, status, items, total, version, times."""
        return await self._get("order_summary", order_id)

    async def customer(self, customer_id: str) -> dict[str, Any] | None:
        """The customer's order history: orders with status and total, counts, lifetime total."""
        return await self._get("customer_history", customer_id)

    async def orders(
        self,
        *,
        status: OrderStatus = "pending",
        customer_id: str | None = None,
        older_than: timedelta | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Orders by status (pending: the active orders), oldest first; optionally one
        customer's, optionally only those created more than `older_than` ago."""
        active = await self._collections.active("active_orders")
        where: dict[str, Any] = {"status": status}
        if customer_id is not None:
            where["customer_id"] = customer_id
        before = None
        if older_than is not None:
            cutoff = datetime.now(UTC) - older_than
            before = ("created_at", format_time(cutoff))
        documents = await self._read_store.find(
            active.collection, where=where, before=before, order_by="created_at", limit=limit
        )
        return [document.body for document in documents]

    async def history(
        self, order_id: str, *, as_of_version: int | None = None, as_of: datetime | None = None
    ) -> OrderHistory:
        if self._event_store is None:
            raise RuntimeError("temporal queries need the event store")
        return await order_history(
            self._event_store, order_id, as_of_version=as_of_version, as_of=as_of
        )


def history_as_json(result: OrderHistory) -> dict[str, Any]:
    state = result.state
    return {
        "order_id": result.order_id,
        "state": {
            "exists": state.exists,
            "version": state.version,
            "status": state.status.value if state.status else None,
            "customer_id": state.customer_id,
            "items": [
                {"sku": line.sku, "quantity": line.quantity, "unit_price": str(line.unit_price)}
                for line in state.lines.values()
            ],
            "total": str(state.total),
        },
        "events": [
            {
                "event_id": str(event.event_id),
                "version": event.version,
                "type": event.type,
                "schema_version": event.schema_version,
                "occurred_at": event.occurred_at.isoformat(),
                "data": dict(event.data),
                "metadata": dict(event.metadata),
            }
            for event in result.events
        ],
    }
