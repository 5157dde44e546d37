"""The Payment aggregate's wire contract: its commands on `payments.commands` and its
integration events on `conveyor.events` (`payments.*`), in the generic envelope
(`aggregate: "payment"`, `aggregate_id`: the order id).

One stream per order. RequestPayment comes from the fulfilment workflow; AuthorizePayment
and DeclinePayment from the payment provider, an outside service publishing to
`payments.commands`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from domain.payments.commands import (
    DEFAULT_CURRENCY,
    AuthorizePayment,
    Command,
    DeclinePayment,
    RefundPayment,
    RequestPayment,
)
from messaging.contracts.wire import (
    AggregateEvent,
    CommandMessage,
    DecimalText,
    EventData,
    Id,
    Identifier,
    Price,
    Reason,
    Text,
)

COMMAND_QUEUE = "payments.commands"
STREAM_PREFIX = "payment-"
ROUTING_KEY_PREFIX = "payments."
CONTRACT_VERSION = 1

Currency = Annotated[
    str, Field(min_length=1, max_length=8, strict=True, description="ISO 4217, e.g. EUR")
]


class _PaymentCommandMessage(CommandMessage):
    order_id: Identifier

    def to_command(self) -> Command:
        raise NotImplementedError


class RequestPaymentMessage(_PaymentCommandMessage):
    type: Literal["RequestPayment"]
    amount: Price
    currency: Currency = DEFAULT_CURRENCY

    def to_command(self) -> Command:
        return RequestPayment(order_id=self.order_id, amount=self.amount, currency=self.currency)


class AuthorizePaymentMessage(_PaymentCommandMessage):
    type: Literal["AuthorizePayment"]
    amount: Price
    provider_reference: Identifier

    def to_command(self) -> Command:
        return AuthorizePayment(
            order_id=self.order_id, amount=self.amount, provider_reference=self.provider_reference
        )


class DeclinePaymentMessage(_PaymentCommandMessage):
    type: Literal["DeclinePayment"]
    reason: Text

    def to_command(self) -> Command:
        return DeclinePayment(order_id=self.order_id, reason=self.reason)


class RefundPaymentMessage(_PaymentCommandMessage):
    type: Literal["RefundPayment"]
    reason: Text

    def to_command(self) -> Command:
        return RefundPayment(order_id=self.order_id, reason=self.reason)


COMMAND_MESSAGES: dict[str, type[CommandMessage]] = {
    "RequestPayment": RequestPaymentMessage,
    "AuthorizePayment": AuthorizePaymentMessage,
    "DeclinePayment": DeclinePaymentMessage,
    "RefundPayment": RefundPaymentMessage,
}

ROUTING_KEYS: dict[str, str] = {
    "PaymentRequested": "payments.requested",
    "PaymentAuthorized": "payments.authorized",
    "PaymentDeclined": "payments.declined",
    "PaymentRefunded": "payments.refunded",
}


class PaymentRequestedData(EventData):
    amount: DecimalText
    currency: Id


class PaymentAuthorizedData(EventData):
    amount: DecimalText
    provider_reference: Id


class PaymentDeclinedData(EventData):
    reason: Reason


class PaymentRefundedData(EventData):
    amount: DecimalText
    reason: Reason


class _PaymentEvent(AggregateEvent):
    routing_keys = ROUTING_KEYS


class PaymentRequestedEvent(_PaymentEvent):
    type: Literal["PaymentRequested"]
    data: PaymentRequestedData


class PaymentAuthorizedEvent(_PaymentEvent):
    type: Literal["PaymentAuthorized"]
    data: PaymentAuthorizedData


class PaymentDeclinedEvent(_PaymentEvent):
    type: Literal["PaymentDeclined"]
    data: PaymentDeclinedData


class PaymentRefundedEvent(_PaymentEvent):
    type: Literal["PaymentRefunded"]
    data: PaymentRefundedData


EVENT_MODELS: dict[str, type[_PaymentEvent]] = {
    "PaymentRequested": PaymentRequestedEvent,
    "PaymentAuthorized": PaymentAuthorizedEvent,
    "PaymentDeclined": PaymentDeclinedEvent,
    "PaymentRefunded": PaymentRefundedEvent,
}
