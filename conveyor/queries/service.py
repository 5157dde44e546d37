"""Query handlers over the read-model port (and the event store, for temporal queries)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from conveyor.aggregates.orders import ORDERS
from conveyor.application.aggregates import AggregateDefinition, aggregate_version
from conveyor.application.history import AggregateHistory, aggregate_history
from conveyor.eventstore.port import EventStore
from conveyor.eventstore.serialization import format_time
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.port import Document, ReadModelStore
from conveyor.readmodels.projections import money

OrderStatus = Literal["pending", "confirmed", "cancelled", "fulfilled"]
STATUSES: tuple[OrderStatus, ...] = ("pending", "confirmed", "cancelled", "fulfilled")
CUSTOMER_ORDERS_LISTED = 1000
"""A customer's answer lists at most this many of their orders, the most recent."""
PAGE = 1000


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

    async def document(self, projection: str, doc_id: str) -> dict[str, Any] | None:
        """A read model's document by id (read-your-writes checks its `version`)."""
        return await self._get(projection, doc_id)

    async def _get(self, projection: str, doc_id: str) -> dict[str, Any] | None:
        active = await self._collections.active(projection)
        document = await self._read_store.get(active.collection, doc_id)
        return document.body if document else None

    async def order(self, order_id: str) -> dict[str, Any] | None:
        """The order summary: customer, status, items, total, version, times."""
        return await self._get("order_summary", order_id)

    async def customer(
        self, customer_id: str, *, limit: int = CUSTOMER_ORDERS_LISTED
    ) -> dict[str, Any] | None:
        """The customer's order history: counts per status, the lifetime confirmed total,
        the latest change, and their most recent `limit` orders (oldest of those first),
        each with status and total. None if the customer has no order.

        Gathered from the customer_history documents, one per order (none grows with the
        customer's history), in several reads: an order changing meanwhile may show in one
        figure and not yet in another, as it would on any read model that lags its log."""
        collection = (await self._collections.active("customer_history")).collection
        where: dict[str, Any] = {"customer_id": customer_id}
        counts = {
            status: await self._read_store.count(collection, where={**where, "status": status})
            for status in STATUSES
        }
        if not any(counts.values()):
            return None
        recent = await self._read_store.find(
            collection, where=where, order_by="created_at", descending=True, limit=limit
        )
        latest = await self._read_store.find(
            collection, where=where, order_by="updated_at", descending=True, limit=1
        )
        # A fulfilled order was confirmed first: its total counts as confirmed too.
        confirmed_total = sum(
            [
                Decimal(document.body["total"])
                for status in ("confirmed", "fulfilled")
                async for document in self._every(collection, {**where, "status": status})
            ],
            Decimal(0),
        )
        return {
            "customer_id": customer_id,
            "orders": [
                {k: v for k, v in document.body.items() if k != "customer_id"}
                for document in reversed(recent)
            ],
            "order_count": sum(counts.values()),
            "pending_count": counts["pending"],
            "confirmed_count": counts["confirmed"],
            "cancelled_count": counts["cancelled"],
            "fulfilled_count": counts["fulfilled"],
            "lifetime_confirmed_total": money(confirmed_total),
            "updated_at": latest[0].body["updated_at"] if latest else None,
        }

    async def _every(self, collection: str, where: dict[str, Any]) -> AsyncIterator[Document]:
        """Every matching document, a page at a time (newest created first). The port pages
        only by "strictly before", so documents sharing a page's boundary time are read
        together, then skipped when they turn up again."""
        before: tuple[str, Any] | None = None
        seen: set[str] = set()
        while True:
            page = await self._read_store.find(
                collection,
                where=where,
                before=before,
                order_by="created_at",
                descending=True,
                limit=PAGE,
            )
            boundary = page[-1].body["created_at"] if len(page) == PAGE else None
            if boundary is not None:
                page += await self._read_store.find(
                    collection, where={**where, "created_at": boundary}, limit=1_000_000
                )
            for document in page:
                if document.id not in seen:
                    seen.add(document.id)
                    yield document
            if boundary is None:
                return
            before = ("created_at", boundary)

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

    async def stock(self, sku: str) -> dict[str, Any] | None:
        """One SKU's stock level: on hand, reserved, available (stock_levels)."""
        return await self._get("stock_levels", sku)

    async def stock_levels(
        self, *, below: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Stock levels, fewest available first; with `below`, only the SKUs with fewer
        than `below` units available (what to restock)."""
        active = await self._collections.active("stock_levels")
        documents = await self._read_store.find(
            active.collection,
            before=("available", below) if below is not None else None,
            order_by="available",
            limit=limit,
        )
        return [document.body for document in documents]

    async def history(
        self, order_id: str, *, as_of_version: int | None = None, as_of: datetime | None = None
    ) -> AggregateHistory:
        if self._event_store is None:
            raise RuntimeError("temporal queries need the event store")
        return await aggregate_history(
            self._event_store, ORDERS, order_id, as_of_version=as_of_version, as_of=as_of
        )


def history_as_json(
    result: AggregateHistory, definition: AggregateDefinition = ORDERS
) -> dict[str, Any]:
    return {
        definition.id_field: result.aggregate_id,
        "state": dict(definition.state_view(result.state)),
        "events": [
            {
                "event_id": str(event.event_id),
                "version": aggregate_version(event),
                "type": event.type,
                "schema_version": event.schema_version,
                "occurred_at": event.occurred_at.isoformat(),
                "data": dict(event.data),
                "metadata": dict(event.metadata),
            }
            for event in result.events
        ],
    }
