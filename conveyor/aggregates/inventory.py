"""The Inventory aggregate, bound once: its rules (domain/inventory), its wire contract
(messaging/contracts/inventory.py), its queue and its read models. One stream per SKU."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.application.aggregates import AggregateDefinition, IntegrationContract
from domain.inventory.errors import InventoryRuleViolation
from domain.inventory.events import CODEC
from domain.inventory.inventory import Inventory, decide
from messaging.contracts import inventory as contract


def inventory_view(state: Inventory) -> Mapping[str, Any]:
    return {
        "sku": state.sku,
        "version": state.version,
        "on_hand": state.on_hand,
        "reserved": state.reserved,
        "available": state.available,
        "reservations": dict(state.reservations),
        "received_total": state.received_total,
        "committed_total": state.committed_total,
    }


INVENTORY = AggregateDefinition(
    name="inventory",
    stream_prefix=contract.STREAM_PREFIX,
    command_queue=contract.COMMAND_QUEUE,
    id_field="sku",
    commands=contract.COMMAND_MESSAGES,
    codec=CODEC,
    initial_state=Inventory,
    evolve=Inventory.apply,
    decide=decide,
    rule_violation=InventoryRuleViolation,
    contract=IntegrationContract(
        routing_keys=contract.ROUTING_KEYS,
        routing_key_prefix=contract.ROUTING_KEY_PREFIX,
        events=contract.EVENT_MODELS,
        schema_versions=dict.fromkeys(contract.ROUTING_KEYS, contract.CONTRACT_VERSION),
    ),
    state_view=inventory_view,
    read_models=("stock_levels",),
)
