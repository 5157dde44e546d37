"""The query API over HTTP (FastAPI on uvicorn, served inside a worker process).

    GET /orders/{order_id}                      the order summary            404 if unknown
    GET /orders/{order_id}/history              events + state, from the event store:
        ?as_of_version=N | ?as_of=ISO-8601      … as of a version or a moment (422 if both)
    GET /customers/{customer_id}/orders         the customer's order history 404 if unknown
    GET /orders?status=pending&customer_id=…&older_than_seconds=…&limit=…
                                                orders by status, oldest first
    GET /stock/{sku}                            one SKU's stock level        404 if unknown
    GET /stock?below=N&limit=…                  stock levels, fewest available first
                                                (with below: fewer than N available)
    GET /workflows?stuck=true&limit=…           fulfilment workflows past their deadline
    GET /workflows/{order_id}                   one workflow's state         404 if unknown
Errors are JSON: {"detail": …}; bad parameters are 422.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, HTTPException, Query

from conveyor.bootstrap import http_access
from conveyor.embedded_http import serve_embedded
from conveyor.eventstore.port import EventStore
from conveyor.eventstore.serialization import to_utc
from conveyor.queries.service import OrderQueries, OrderStatus, history_as_json
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.port import ReadModelStore
from conveyor.settings import Settings
from conveyor.workflows.states import WorkflowStates

MAX_VERSION = 2**53
"""Above any real order's version, and inside every store's integer range."""
MAX_STOCK = 10**12
"""Beyond any SKU's stock (the Inventory contract's bound)."""
MAX_AGE_SECONDS = 100 * 365 * 24 * 3600.0
"""Inside what a timedelta holds (and what "older than" can sensibly mean)."""


def create_app(queries: OrderQueries, workflows: WorkflowQueries | None = None) -> FastAPI:
    app = FastAPI(
        title="conveyor queries",
        description="Order read models and temporal queries on the event store.",
        version="1",
    )

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str) -> dict[str, Any]:
        order = await queries.order(order_id)
        if order is None:
            raise HTTPException(404, f"order {order_id!r} not found")
        return order

    @app.get("/orders/{order_id}/history")
    async def get_order_history(
        order_id: str,
        as_of_version: Annotated[int | None, Query(ge=0, le=MAX_VERSION)] = None,
        as_of: datetime | None = None,
    ) -> dict[str, Any]:
        if as_of_version is not None and as_of is not None:
            raise HTTPException(422, "give as_of_version or as_of, not both")
        try:
            as_of_utc = to_utc(as_of) if as_of is not None else None
        except OverflowError:  # a valid ISO time whose UTC form is before year 1 / after 9999
            raise HTTPException(422, "as_of is out of range in UTC") from None
        history = await queries.history(order_id, as_of_version=as_of_version, as_of=as_of_utc)
        if not history.events and as_of_version is None and as_of is None:
            raise HTTPException(404, f"order {order_id!r} not found")
        return history_as_json(history)

    @app.get("/customers/{customer_id}/orders")
    async def get_customer_orders(customer_id: str) -> dict[str, Any]:
        customer = await queries.customer(customer_id)
        if customer is None:
            raise HTTPException(404, f"customer {customer_id!r} not found")
        return customer

    @app.get("/orders")
    async def list_orders(
        status: OrderStatus = "pending",
        customer_id: str | None = None,
        older_than_seconds: Annotated[
            float | None, Query(ge=0, le=MAX_AGE_SECONDS, allow_inf_nan=False)
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        orders = await queries.orders(
            status=status,
            customer_id=customer_id,
            older_than=timedelta(seconds=older_than_seconds)
            if older_than_seconds is not None
            else None,
            limit=limit,
        )
        return {"orders": orders, "count": len(orders)}

    @app.get("/stock/{sku}")
    async def get_stock(sku: str) -> dict[str, Any]:
        level = await queries.stock(sku)
        if level is None:
            raise HTTPException(404, f"sku {sku!r} not found")
        return level

    @app.get("/stock")
    async def list_stock(
        below: Annotated[int | None, Query(ge=-MAX_STOCK, le=MAX_STOCK)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        levels = await queries.stock_levels(below=below, limit=limit)
        return {"stock": levels, "count": len(levels)}

    if workflows is not None:
        _workflow_routes(app, workflows)
    return app


class WorkflowQueries:
    def __init__(self, states: WorkflowStates, stuck_margin: timedelta) -> None:
        self.states = states
        self.stuck_margin = stuck_margin


def _workflow_routes(app: FastAPI, workflows: WorkflowQueries) -> None:
    @app.get("/workflows")
    async def list_workflows(
        stuck: Annotated[bool, Query(description="Only workflows past their deadline")] = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        if not stuck:
            raise HTTPException(422, "only ?stuck=true is served: the list of stuck workflows")
        found = await workflows.states.stuck(datetime.now(UTC), workflows.stuck_margin, limit=limit)
        return {"workflows": [s.as_json() for s in found], "count": len(found)}

    @app.get("/workflows/{order_id}")
    async def get_workflow(order_id: str) -> dict[str, Any]:
        found = await workflows.states.get(order_id)
        if found is None:
            raise HTTPException(404, f"no workflow for order {order_id!r}")
        return found.as_json()


async def serve(
    settings: Settings,
    event_store: EventStore,
    read_store: ReadModelStore,
    collections: ProjectionCollections,
) -> tuple[uvicorn.Server, int, asyncio.Task[None]]:
    """Start serving; returns the server, the bound port and the serving task."""
    app = create_app(
        OrderQueries(read_store, collections, event_store),
        WorkflowQueries(
            WorkflowStates(read_store), timedelta(seconds=settings.fulfilment_stuck_margin)
        ),
    )
    return await serve_embedded(
        app,
        settings.http_host,
        settings.http_port,
        what="HTTP",
        port_variable="CONVEYOR_HTTP_PORT",
        task_name="http",
        access=http_access(settings, settings.http_host),
    )
