"""Inventory as a registered aggregate, for the snapshot tests and the bench, until its own
definition (conveyor/aggregates/inventory.py) lands: the domain of domain/inventory with
its snapshots at their default interval, and a minimal wire contract (receive stock)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from conveyor.application.aggregates import AggregateDefinition, IntegrationContract, Registry
from domain.inventory.commands import ReceiveStock
from domain.inventory.errors import InventoryRuleViolation
from domain.inventory.events import CODEC
from domain.inventory.inventory import Inventory, decide
from domain.inventory.snapshots import SNAPSHOT_EVERY, SNAPSHOTS
from messaging.contracts.wire import AggregateEvent, CommandMessage, EventData, Identifier


class ReceiveStockMessage(CommandMessage):
    type: Literal["ReceiveStock"]
    sku: Identifier
    quantity: int

    def to_command(self) -> ReceiveStock:
        return ReceiveStock(self.sku, self.quantity)


ROUTING_KEYS = {"StockReceived": "inventory.stock-received"}


class _InventoryEvent(AggregateEvent):
    routing_keys = ROUTING_KEYS


class StockReceivedData(EventData):
    quantity: int


class StockReceivedEvent(_InventoryEvent):
    type: Literal["StockReceived"]
    data: StockReceivedData


INVENTORY = AggregateDefinition(
    name="inventory",
    stream_prefix="inventory-",
    command_queue="inventory.commands",
    id_field="sku",
    commands={"ReceiveStock": ReceiveStockMessage},
    codec=CODEC,
    initial_state=Inventory,
    evolve=Inventory.apply,
    decide=decide,
    rule_violation=InventoryRuleViolation,
    contract=IntegrationContract(
        routing_keys=ROUTING_KEYS,
        routing_key_prefix="inventory.",
        events={"StockReceived": StockReceivedEvent},
    ),
    snapshots=SNAPSHOTS,
    snapshot_every=SNAPSHOT_EVERY,
)


def inventory_registry(*, snapshot_every: int | None = SNAPSHOT_EVERY) -> Registry:
    """A registry holding Inventory alone, its snapshots every `snapshot_every` events
    (None: off)."""
    return Registry(replace(INVENTORY, snapshot_every=snapshot_every))
