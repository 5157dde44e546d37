"""The payment provider, played by the harness: an outside service that reads the
`payments.requested` integration events from `conveyor.events` (its own durable queue,
declared before any workflow starts) and answers on `payments.commands` with
AuthorizePayment or DeclinePayment, confirmed by the broker, or not at all.

Its answers are stable per order (`answer_of`) and carry ids derived from the order, so a
request delivered twice (the gateway is at-least-once) is answered twice with the same
command_id: applied once. What it published goes into a LoadRecord, checked like any load.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from chaos.load import LoadGenerator, LoadRecord, Outgoing
from conveyor.aggregates import AGGREGATES
from messaging.cluster import connect_robust_any
from messaging.integration_events import EVENTS_EXCHANGE

PAYMENT = AGGREGATES.named("payment")
REQUESTS_QUEUE = "chaos.payment-requests"

Answer = str  # "authorize" | "decline" | "none"


def mostly_authorize(decline: float = 0.12, unanswered: float = 0.04) -> Callable[[str], Answer]:
    """Most authorized, some declined, a few left unanswered (they time out): stable per
    order."""

    def answer(order_id: str) -> Answer:
        roll = random.Random(f"provider|{order_id}").random()
        return (
            "decline"
            if roll < decline
            else "none"
            if roll < decline + unanswered
            else ("authorize")
        )

    return answer


def always_authorize(order_id: str) -> Answer:
    return "authorize"


class PaymentProvider:
    """Use `async with`; `answers` counts what it did, by answer, once per order."""

    def __init__(
        self,
        amqp_url: str,
        answer_of: Callable[[str], Answer] = always_authorize,
        *,
        queue: str = REQUESTS_QUEUE,
    ) -> None:
        self.amqp_url = amqp_url
        self.answer_of = answer_of
        self.queue = queue
        self.answers: Counter[str] = Counter()
        self.requests = 0
        self._answered: set[str] = set()
        self._connection: AbstractRobustConnection | None = None
        self._commands = LoadGenerator(amqp_url, PAYMENT.command_queue)

    @property
    def record(self) -> LoadRecord:
        return self._commands.record

    async def __aenter__(self) -> PaymentProvider:
        await self._commands.__aenter__()
        self._connection = await connect_robust_any(self.amqp_url)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=200)
        exchange = await channel.declare_exchange(
            EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            self.queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, routing_key=PAYMENT.contract.routing_keys["PaymentRequested"])
        await queue.consume(self._on_request)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        await self._commands.__aexit__(*exc_info)

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        try:
            event = json.loads(message.body)
            order_id = str(event.get(PAYMENT.contract.id_field) or event["aggregate_id"])
            amount = event["data"]["amount"]
        except Exception:
            await message.reject()
            return
        self.requests += 1
        answer = self.answer_of(order_id)
        if order_id not in self._answered:
            self._answered.add(order_id)
            self.answers[answer] += 1
        command = _answer_command(answer, order_id, amount)
        if command is not None:
            record = await self._commands.publish([Outgoing.command(command)])
            if record.failed:  # not confirmed: the request comes back, answered again
                await message.nack(requeue=True)
                return
        await message.ack()


def _answer_command(answer: Answer, order_id: str, amount: Any) -> dict[str, Any] | None:
    if answer == "authorize":
        return {
            "type": "AuthorizePayment",
            "command_id": f"provider-authorize-{order_id}",
            "order_id": order_id,
            "amount": amount,
            "provider_reference": f"psp-{order_id}",
        }
    if answer == "decline":
        return {
            "type": "DeclinePayment",
            "command_id": f"provider-decline-{order_id}",
            "order_id": order_id,
            "reason": "insufficient funds",
        }
    return None
