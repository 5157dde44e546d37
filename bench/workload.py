"""The one Order workload every figure uses: create, add two items, confirm.

Each order is four commands (JSON bodies as they travel on the command queue, or domain
commands for the in-process figures); orders are spread over customers like the demo does.
"""

from __future__ import annotations

import uuid
import zlib
from decimal import Decimal
from typing import Any

from conveyor.application.commands import CommandEnvelope
from domain.orders.commands import AddItem, Command, ConfirmOrder, CreateOrder

COMMANDS_PER_ORDER = 4
ITEMS = (("BOOK", 2, "9.99"), ("MUG", 1, "4.50"))


def order_ids(count: int, prefix: str | None = None) -> list[str]:
    run = prefix or uuid.uuid4().hex[:8]
    return [f"bench-{run}-{n}" for n in range(count)]


def customer_of(order_id: str, customers: int = 1000) -> str:
    return f"customer-{zlib.crc32(order_id.encode()) % customers}"


def command_bodies(order_id: str) -> list[dict[str, Any]]:
    """The order's four commands as wire JSON (each with its own command_id)."""

    def body(type_: str, **fields: Any) -> dict[str, Any]:
        return {"type": type_, "command_id": str(uuid.uuid4()), "order_id": order_id, **fields}

    return [
        body("CreateOrder", customer_id=customer_of(order_id)),
        *(body("AddItem", sku=sku, quantity=qty, unit_price=price) for sku, qty, price in ITEMS),
        body("ConfirmOrder"),
    ]


def domain_commands(order_id: str) -> list[Command]:
    return [
        CreateOrder(order_id=order_id, customer_id=customer_of(order_id)),
        *(
            AddItem(order_id=order_id, sku=sku, quantity=qty, unit_price=Decimal(price))
            for sku, qty, price in ITEMS
        ),
        ConfirmOrder(order_id=order_id),
    ]


def envelope(command: Command) -> CommandEnvelope:
    command_id = str(uuid.uuid4())
    return CommandEnvelope(command, command_id, command_id, command_id)
