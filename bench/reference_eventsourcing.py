"""The reference for the command core and the rebuild: the Python `eventsourcing` library.

An eventsourcing `Aggregate` Order with conveyor's rules (the ones the workload exercises,
and the same refusals), in an `Application` on eventsourcing's own SQLite persistence
module (PERSISTENCE_MODULE=eventsourcing.sqlite, SQLITE_DBNAME=<file>). Each command is a
load (repository.get) plus a save, as conveyor's handler does a read_stream plus an append.

eventsourcing is synchronous: its concurrency is threads sharing its connection pool
(5 connections + 10 overflow by default), so the workload runs on a thread pool.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, event

from bench.workload import ITEMS, customer_of

NAMESPACE = uuid.UUID("0f0e4f55-2b0c-4a36-9d43-0b1f6b1c2d3e")
MAX_QUANTITY_PER_SKU = 1000


class RuleViolation(Exception):
    pass


class Order(Aggregate):
    @staticmethod
    def create_id(order_id: str, customer_id: str) -> uuid.UUID:
        return uuid.uuid5(NAMESPACE, order_id)

    @event("Created")
    def __init__(self, order_id: str, customer_id: str) -> None:
        self.order_id = order_id
        self.customer_id = customer_id
        self.status = "pending"
        self.lines: dict[str, tuple[int, Decimal]] = {}
        self.total = Decimal("0.00")

    def add_item(self, sku: str, quantity: int, unit_price: Decimal) -> None:
        if self.status != "pending":
            raise RuleViolation(f"order {self.order_id!r} is {self.status}, not pending")
        if not 1 <= quantity <= MAX_QUANTITY_PER_SKU:
            raise RuleViolation(f"quantity {quantity} out of range")
        price = unit_price.quantize(Decimal("0.01"))
        existing = self.lines.get(sku)
        if existing is not None:
            if existing[1] != price:
                raise RuleViolation(f"sku {sku!r} is already in the order at another price")
            if existing[0] + quantity > MAX_QUANTITY_PER_SKU:
                raise RuleViolation(f"sku {sku!r} would exceed {MAX_QUANTITY_PER_SKU}")
        self._item_added(sku, quantity, price)

    @event("ItemAdded")
    def _item_added(self, sku: str, quantity: int, unit_price: Decimal) -> None:
        existing = self.lines.get(sku)
        self.lines[sku] = (quantity + (existing[0] if existing else 0), unit_price)

    def confirm(self) -> None:
        if self.status == "confirmed":
            raise RuleViolation(f"order {self.order_id!r} is already confirmed")
        if self.status != "pending":
            raise RuleViolation(f"order {self.order_id!r} is {self.status}")
        if not self.lines:
            raise RuleViolation(f"order {self.order_id!r} has no items")
        total = sum((qty * price for qty, price in self.lines.values()), Decimal("0.00"))
        self._confirmed(total)

    @event("Confirmed")
    def _confirmed(self, total: Decimal) -> None:
        self.status = "confirmed"
        self.total = total


class Orders(Application[uuid.UUID]):
    name = "BenchOrders"

    def create(self, order_id: str, customer_id: str) -> uuid.UUID:
        order_uuid = Order.create_id(order_id, customer_id)
        try:  # a load first, as conveyor's handler reads the stream before creating
            self.repository.get(order_uuid)
        except AggregateNotFoundError:
            pass
        else:
            raise RuleViolation(f"order {order_id!r} already exists")
        order = Order(order_id, customer_id)
        self.save(order)
        return order.id

    def add_item(self, order_uuid: uuid.UUID, sku: str, quantity: int, price: Decimal) -> None:
        order: Order = self.repository.get(order_uuid)
        order.add_item(sku, quantity, price)
        self.save(order)

    def confirm(self, order_uuid: uuid.UUID) -> None:
        order: Order = self.repository.get(order_uuid)
        order.confirm()
        self.save(order)


def open_app(path: Path) -> Orders:
    return Orders(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(path),
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    )


def synchronous_setting(path: Path) -> dict[str, Any]:
    """What eventsourcing's connections run with: it sets WAL and leaves `synchronous` at
    SQLite's default (read back from a connection made the way it makes them)."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
        sync = connection.execute("PRAGMA synchronous").fetchone()[0]
    finally:
        connection.close()
    return {"journal_mode": journal, "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL"}[sync]}


def run_order(app: Orders, order_id: str) -> None:
    order_uuid = app.create(order_id, customer_of(order_id))
    for sku, quantity, price in ITEMS:
        app.add_item(order_uuid, sku, quantity, Decimal(price))
    app.confirm(order_uuid)


def command_core(path: Path, orders: Sequence[str], threads: int) -> float:
    """Seconds to run every order's four commands, `threads` orders at a time."""
    app = open_app(path)
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for _ in pool.map(lambda order_id: run_order(app, order_id), orders):
                pass
        return time.perf_counter() - started
    finally:
        app.close()


def populate(path: Path, orders: Sequence[str], batch: int = 500) -> int:
    """Store the workload's events for `orders` quickly (whole orders, many per save): the
    rebuild reference replays them; how they were written does not matter to a replay."""
    app = open_app(path)
    try:
        stored = 0
        for start in range(0, len(orders), batch):
            aggregates = []
            for order_id in orders[start : start + batch]:
                order = Order(order_id, customer_of(order_id))
                for sku, quantity, price in ITEMS:
                    order.add_item(sku, quantity, Decimal(price))
                order.confirm()
                aggregates.append(order)
            recordings = app.save(*aggregates)
            stored += len(recordings)
        return stored
    finally:
        app.close()


def replay(path: Path, page_size: int = 5000) -> tuple[int, float]:
    """(events, seconds): read the application sequence (notification log) from the start
    and fold every event into its in-memory aggregate — eventsourcing's own replay."""
    app = open_app(path)
    try:
        started = time.perf_counter()
        aggregates: dict[uuid.UUID, Any] = {}
        mapper = app.mapper
        recorder = app.recorder
        start, folded = 1, 0
        while notifications := recorder.select_notifications(start, page_size):
            for notification in notifications:
                domain_event: Any = mapper.to_domain_event(notification)
                aggregate_id = domain_event.originator_id
                aggregates[aggregate_id] = domain_event.mutate(aggregates.get(aggregate_id))
            folded += len(notifications)
            start = notifications[-1].id + 1
        return folded, time.perf_counter() - started
    finally:
        app.close()
