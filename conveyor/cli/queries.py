"""`conveyor history` (temporal, from the event store) and `conveyor query ...` (the read
models)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from conveyor.aggregates import AGGREGATES
from conveyor.application.aggregates import AggregateDefinition, aggregate_version
from conveyor.application.history import AggregateHistory, aggregate_history
from conveyor.cli.app import console, fail, print_json, run_async
from conveyor.cli.stores import event_store, read_store
from conveyor.eventstore.serialization import to_utc
from conveyor.queries.service import OrderQueries, history_as_json
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.settings import Settings

T = TypeVar("T")


def _parse_time(value: str) -> datetime:
    try:
        return to_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        fail(f"--as-of must be an ISO 8601 time such as 2026-11-26T10:00:00Z, got {value!r}", 2)


def history(
    aggregate_id: Annotated[str, typer.Argument(help="The aggregate's id (an order id).")],
    as_of_version: Annotated[
        int | None, typer.Option(min=0, help="State as of this version.")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option(help="State as of this ISO 8601 time (UTC if no zone).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    aggregate: Annotated[
        str | None,
        typer.Option(help="Which registered aggregate (default: the first, order)."),
    ] = None,
) -> None:
    """An aggregate's events and its state at a point (temporal query on the event store)."""
    if as_of_version is not None and as_of is not None:
        fail("give --as-of-version or --as-of, not both", 2)
    moment = _parse_time(as_of) if as_of else None
    try:
        definition = AGGREGATES.named(aggregate) if aggregate else AGGREGATES.default
    except LookupError as unknown:
        fail(str(unknown), 2)

    async def main(settings: Settings) -> AggregateHistory:
        async with event_store(settings, read_only=True) as store:
            return await aggregate_history(
                store, definition, aggregate_id, as_of_version=as_of_version, as_of=moment
            )

    result = run_async(main)
    if as_json:
        print(json.dumps(history_as_json(result, definition), indent=2))
    else:
        print_history(result, definition)
    if not result.events:
        raise typer.Exit(1)


def print_history(result: AggregateHistory, definition: AggregateDefinition) -> None:
    if not result.events:
        console.print(f"{definition.name} {result.aggregate_id!r} has no events at that point")
        return
    table = Table(title=f"{definition.name} {result.aggregate_id}")
    for column in ("version", "occurred at (UTC)", "event", "data", "command_id"):
        table.add_column(column)
    for event in result.events:
        table.add_row(
            str(aggregate_version(event)),
            event.occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f"),
            event.type,
            json.dumps(dict(event.data)),
            event.metadata.get("command_id", ""),
        )
    console.print(table)
    view = dict(definition.state_view(result.state))
    version = aggregate_version(result.events[-1])
    scalars = [
        f"{name.replace('_id', '')} {value}"
        for name, value in view.items()
        if name not in ("exists", "version", "status") and not isinstance(value, list | dict)
    ]
    summary = "".join(f", {text}" for text in scalars)
    console.print(f"state at version {version}: {view.get('status', '')}{summary}", markup=False)
    for name, value in view.items():
        if isinstance(value, list):
            for item in value:
                console.print(f"  {name}: {json.dumps(item, default=str)}", markup=False)


query_app = typer.Typer(
    help="Read models: orders, customers, active orders, stock levels.", no_args_is_help=True
)


def _run_query(
    ask: Callable[[OrderQueries], Awaitable[T]],
) -> T:
    async def main(settings: Settings) -> T:
        async with read_store(settings, read_only=True) as store:
            return await ask(OrderQueries(store, ProjectionCollections(store)))

    return run_async(main)


@query_app.command("order")
def query_order(
    order_id: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """The order summary of one order."""
    order = _run_query(lambda q: q.order(order_id))
    if order is None:
        fail(f"order {order_id!r} not found in the order summary read model")
    if as_json:
        print_json(order)
        return
    console.print(
        f"order {order['order_id']} of {order['customer_id']}: {order['status']}, "
        f"total {order['total']}, version {order['version']}, updated {order['updated_at']}"
    )
    if order.get("cancel_reason") is not None:
        console.print(f"cancelled: {order['cancel_reason']}", markup=False)
    table = Table("sku", "quantity", "unit price", "subtotal")
    for item in order["items"]:
        table.add_row(item["sku"], str(item["quantity"]), item["unit_price"], item["subtotal"])
    console.print(table)


@query_app.command("customer")
def query_customer(
    customer_id: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """A customer's order history."""
    customer = _run_query(lambda q: q.customer(customer_id))
    if customer is None:
        fail(f"customer {customer_id!r} not found in the customer history read model")
    if as_json:
        print_json(customer)
        return
    console.print(
        f"customer {customer_id}: {customer['order_count']} orders "
        f"({customer['pending_count']} pending, {customer['confirmed_count']} confirmed, "
        f"{customer['cancelled_count']} cancelled), lifetime confirmed total "
        f"{customer['lifetime_confirmed_total']}"
    )
    table = Table("order", "status", "total", "created")
    for order in customer["orders"]:
        table.add_row(order["order_id"], order["status"], order["total"], order["created_at"])
    console.print(table)


@query_app.command("active")
def query_active(
    customer: Annotated[str | None, typer.Option(help="Only this customer's orders.")] = None,
    older_than: Annotated[
        float | None, typer.Option(min=0, help="Only orders created more than N seconds ago.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Pending orders, oldest first."""
    orders = _run_query(
        lambda q: q.orders(
            customer_id=customer,
            older_than=timedelta(seconds=older_than) if older_than is not None else None,
            limit=limit,
        )
    )
    if as_json:
        print_json(orders)
        return
    table = Table("order", "customer", "items", "total", "created")
    for order in orders:
        table.add_row(
            order["order_id"],
            order["customer_id"],
            str(order["item_count"]),
            order["total"],
            order["created_at"],
        )
    console.print(table)
    console.print(f"{len(orders)} pending order(s)")


@query_app.command("stock")
def query_stock(
    sku: Annotated[str | None, typer.Argument(help="One SKU; without it, a list.")] = None,
    below: Annotated[
        int | None, typer.Option(help="Only SKUs with fewer than N units available.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Stock levels: one SKU's, or the SKUs with the fewest available first."""
    if sku is not None:
        level = _run_query(lambda q: q.stock(sku))
        if level is None:
            fail(f"sku {sku!r} not found in the stock levels read model")
        levels = [level]
    else:
        levels = _run_query(lambda q: q.stock_levels(below=below, limit=limit))
    if as_json:
        print_json(level if sku is not None else levels)
        return
    table = Table("sku", "on hand", "reserved", "available", "open reservations", "updated")
    for item in levels:
        table.add_row(
            item["sku"],
            str(item["on_hand"]),
            str(item["reserved"]),
            str(item["available"]),
            str(item["open_reservations"]),
            item["updated_at"] or "",
        )
    console.print(table)
