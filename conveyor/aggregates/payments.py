"""The Payment aggregate, bound once: its rules (domain/payments), its wire contract
(messaging/contracts/payments.py), its queue. One stream per order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.application.aggregates import AggregateDefinition, IntegrationContract
from domain.payments.errors import PaymentRuleViolation
from domain.payments.events import CODEC
from domain.payments.payment import Payment, decide
from messaging.contracts import payments as contract


def payment_view(state: Payment) -> Mapping[str, Any]:
    return {
        "order_id": state.order_id,
        "version": state.version,
        "status": state.status.value if state.status else None,
        "amount": None if state.amount is None else str(state.amount),
        "currency": state.currency,
        "provider_reference": state.provider_reference,
        "decline_reason": state.decline_reason,
        "refund_reason": state.refund_reason,
    }


PAYMENTS = AggregateDefinition(
    name="payment",
    stream_prefix=contract.STREAM_PREFIX,
    command_queue=contract.COMMAND_QUEUE,
    id_field="order_id",
    commands=contract.COMMAND_MESSAGES,
    codec=CODEC,
    initial_state=Payment,
    evolve=Payment.apply,
    decide=decide,
    rule_violation=PaymentRuleViolation,
    contract=IntegrationContract(
        routing_keys=contract.ROUTING_KEYS,
        routing_key_prefix=contract.ROUTING_KEY_PREFIX,
        events=contract.EVENT_MODELS,
        schema_versions=dict.fromkeys(contract.ROUTING_KEYS, contract.CONTRACT_VERSION),
    ),
    state_view=payment_view,
)
