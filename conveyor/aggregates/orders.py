"""The Order aggregate, bound once: its rules (domain/orders), its wire contract
(messaging/contracts/orders.py), its queue and its read models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.application.aggregates import AggregateDefinition, IntegrationContract
from domain.orders.errors import OrderRuleViolation
from domain.orders.events import CODEC
from domain.orders.order import Order, decide
from messaging.contracts import orders as contract


def order_view(state: Order) -> Mapping[str, Any]:
    return {
        "exists": state.exists,
        "version": state.version,
        "status": state.status.value if state.status else None,
        "customer_id": state.customer_id,
        "items": [
            {"sku": line.sku, "quantity": line.quantity, "unit_price": str(line.unit_price)}
            for line in state.lines.values()
        ],
        "total": str(state.total),
    }


ORDERS = AggregateDefinition(
    name="order",
    stream_prefix=contract.ORDER_STREAM_PREFIX,
    command_queue=contract.COMMAND_QUEUE,
    id_field="order_id",
    commands=contract.COMMAND_MESSAGES,
    codec=CODEC,
    initial_state=Order,
    evolve=Order.apply,
    decide=decide,
    rule_violation=OrderRuleViolation,
    contract=IntegrationContract(
        routing_keys=contract.ROUTING_KEYS,
        routing_key_prefix=contract.ROUTING_KEY_PREFIX,
        events=contract.EVENT_MODELS,
        schema_versions=dict.fromkeys(contract.ROUTING_KEYS, contract.CONTRACT_VERSION),
        id_field="order_id",
        aggregate_field=None,  # Order's envelope predates `aggregate`: kept as it was
        sticky={"customer_id": ("OrderCreated", "customer_id")},
    ),
    state_view=order_view,
    read_models=("order_summary", "customer_history", "active_orders"),
    legacy_rejections=True,
)
