"""Every aggregate of the application, registered once.

Adding an aggregate: its rules in `domain/<name>/`, its wire contract in
`messaging/contracts/<name>.py`, its definition in `conveyor/aggregates/<name>.py`, and one
entry in the tuple below. Nothing in the shared machinery changes.
"""

from __future__ import annotations

from conveyor.aggregates.inventory import INVENTORY
from conveyor.aggregates.orders import ORDERS
from conveyor.aggregates.payments import PAYMENTS
from conveyor.application.aggregates import AggregateDefinition, Registry

AGGREGATES = Registry(
    ORDERS,
    INVENTORY,
    PAYMENTS,
)

__all__ = ["AGGREGATES", "AggregateDefinition", "Registry"]
