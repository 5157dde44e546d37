"""Inventory and Payment through the shared machinery, against the real RabbitMQ and a real
SQLite file: commands published to `inventory.commands` / `payments.commands` as an outside
service would (the payment provider included), outcomes on `conveyor.command-outcomes`,
idempotency by command id, rejection markers, retries and the DLQ, and the integration
events the gateway publishes on `conveyor.events`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest

from conveyor.aggregates import AGGREGATES
from conveyor.application.aggregates import is_marker
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.settings import Settings
from messaging import failures
from messaging.topology import COMMAND_OUTCOMES_EXCHANGE, COMMANDS_EXCHANGE_NAME
from tests.integration.test_command_worker import RefusedAppends
from tests.rabbit import Management, eventually, publish, queue_depth
from workers.host import WorkerHost

pytestmark = pytest.mark.rabbitmq

StartWorker = Callable[..., Awaitable[WorkerHost]]
INVENTORY = AGGREGATES.named("inventory")
PAYMENTS = AGGREGATES.named("payment")


def command(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "command_id": str(uuid.uuid4()), **fields}


class Producer:
    """An outside service: publishes to `conveyor.commands` with the queue's name as routing
    key, asks for replies, and watches every outcome on `conveyor.command-outcomes`."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel) -> None:
        self.channel = channel

    @classmethod
    async def open(cls, channel: aio_pika.abc.AbstractChannel, prefixes: list[str]) -> Producer:
        producer = cls(channel)
        producer.replies = await channel.declare_queue(exclusive=True)
        producer.outcomes = await channel.declare_queue(exclusive=True)
        for prefix in prefixes:
            await producer.outcomes.bind(
                COMMAND_OUTCOMES_EXCHANGE, routing_key=f"{prefix}command.#"
            )
        producer.exchange = await channel.get_exchange(COMMANDS_EXCHANGE_NAME)
        return producer

    replies: aio_pika.abc.AbstractQueue
    outcomes: aio_pika.abc.AbstractQueue
    exchange: aio_pika.abc.AbstractExchange

    async def send(self, queue: str, body: dict[str, Any]) -> dict[str, Any]:
        await self.exchange.publish(
            aio_pika.Message(
                json.dumps(body).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                reply_to=self.replies.name,
            ),
            routing_key=queue,
        )
        message = await eventually(
            lambda: self.replies.get(fail=False, no_ack=True), what=f"a reply to {body['type']}"
        )
        reply: dict[str, Any] = json.loads(message.body)
        assert reply["command_id"] == body["command_id"]
        return reply

    async def published_outcomes(self, count: int) -> list[tuple[str, str]]:
        seen = []
        for _ in range(count):
            message = await eventually(
                lambda: self.outcomes.get(fail=False, no_ack=True), what="an outcome"
            )
            seen.append((message.routing_key or "", json.loads(message.body)["status"]))
        return seen


async def domain_events(reader: SqliteEventStore, stream: str) -> list[Any]:
    return [e for e in await reader.read_stream(stream) if not is_marker(e)]


async def test_inventory_commands_on_their_queue_reserve_refuse_and_reject_once(
    settings: Settings, start_worker: StartWorker, reader: SqliteEventStore, amqp_url: str
) -> None:
    await start_worker(settings)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        producer = await Producer.open(await connection.channel(), ["inventory."])
        queue = "inventory.commands"
        receive = command("ReceiveStock", sku="SKU-1", quantity=5)
        reserve = command("ReserveStock", sku="SKU-1", order_id="o-1", quantity=3)
        too_many = command("ReserveStock", sku="SKU-1", order_id="o-2", quantity=3)
        unknown = command("ReleaseReservation", sku="SKU-1", order_id="o-9")
        replies = [await producer.send(queue, body) for body in (receive, reserve, too_many)]
        assert [(r["status"], r["sku"], r["version"]) for r in replies] == [
            ("accepted", "SKU-1", 1),
            ("accepted", "SKU-1", 2),
            ("accepted", "SKU-1", 3),  # a refusal is a fact, recorded like any other
        ]
        rejected = await producer.send(queue, unknown)
        assert (rejected["status"], rejected["rule"]) == ("rejected", "reservation_not_found")
        assert "o-9" in rejected["reason"]
        again = await producer.send(queue, reserve)  # redelivered: applies once
        assert (again["status"], again["version"]) == ("duplicate", 2)
        rejected_again = await producer.send(queue, unknown)
        assert rejected_again == rejected  # the recorded rejection, reported again
        assert await producer.published_outcomes(6) == [
            ("inventory.command.accepted", "accepted"),
            ("inventory.command.accepted", "accepted"),
            ("inventory.command.accepted", "accepted"),
            ("inventory.command.rejected", "rejected"),
            ("inventory.command.duplicate", "duplicate"),
            ("inventory.command.rejected", "rejected"),
        ]

    stream = await reader.read_stream(INVENTORY.stream("SKU-1"))
    assert [e.type for e in stream] == [
        "StockReceived",
        "StockReserved",
        "ReservationRefused",
        "CommandRejected",  # the rejection marker: final for that command id
    ]
    assert stream[2].data == {"order_id": "o-2", "sku": "SKU-1", "requested": 3, "available": 2}
    state = INVENTORY.fold("SKU-1", stream)
    assert (state.on_hand, state.reserved, state.available) == (5, 3, 2)


async def test_the_payment_provider_authorizes_and_declines_on_payments_commands(
    settings: Settings, start_worker: StartWorker, reader: SqliteEventStore, amqp_url: str
) -> None:
    await start_worker(settings)
    queue = "payments.commands"
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        producer = await Producer.open(await connection.channel(), ["payments."])
        for order_id in ("o-1", "o-2"):
            requested = await producer.send(
                queue, command("RequestPayment", order_id=order_id, amount="19.98")
            )
            assert requested["status"] == "accepted"
        wrong = await producer.send(
            queue,
            command("AuthorizePayment", order_id="o-1", amount="20.00", provider_reference="p-1"),
        )
        assert (wrong["status"], wrong["rule"]) == ("rejected", "amount_mismatch")
        authorize = command(
            "AuthorizePayment", order_id="o-1", amount="19.98", provider_reference="p-1"
        )
        assert (await producer.send(queue, authorize))["status"] == "accepted"
        assert (await producer.send(queue, authorize))["status"] == "duplicate"
        twice = await producer.send(
            queue,
            command("AuthorizePayment", order_id="o-1", amount="19.98", provider_reference="p-2"),
        )
        assert (twice["status"], twice["rule"]) == ("rejected", "payment_already_authorized")
        decline = await producer.send(
            queue, command("DeclinePayment", order_id="o-2", reason="card expired")
        )
        assert (decline["status"], decline["order_id"]) == ("accepted", "o-2")
        late = await producer.send(
            queue,
            command("AuthorizePayment", order_id="o-2", amount="19.98", provider_reference="p-3"),
        )
        assert (late["status"], late["rule"]) == ("rejected", "payment_declined")

    paid = await domain_events(reader, PAYMENTS.stream("o-1"))
    assert [e.type for e in paid] == ["PaymentRequested", "PaymentAuthorized"]
    assert paid[1].data == {"amount": "19.98", "provider_reference": "p-1"}
    declined = await domain_events(reader, PAYMENTS.stream("o-2"))
    assert [e.type for e in declined] == ["PaymentRequested", "PaymentDeclined"]


@pytest.mark.parametrize(
    ("queue", "body", "error_type"),
    [
        ("inventory.commands", {"type": "ReserveStock", "sku": "S", "quantity": 1}, "SchemaError"),
        (
            "payments.commands",
            {"type": "AuthorizePayment", "order_id": "o", "amount": "x", "provider_reference": "p"},
            "SchemaError",
        ),
    ],
)
async def test_an_invalid_command_goes_straight_to_its_queues_dlq(
    settings: Settings,
    start_worker: StartWorker,
    amqp_url: str,
    management: Management,
    test_vhost: str,
    queue: str,
    body: dict[str, Any],
    error_type: str,
) -> None:
    await start_worker(settings)
    await publish(amqp_url, queue, {**body, "command_id": "bad-1"})
    dead = await eventually(lambda: management.peek(test_vhost, f"{queue}.dlq"), what="a DLQ")
    headers = dead[0]["properties"]["headers"]
    assert headers[failures.ERROR_TYPE] == error_type
    assert headers[failures.FAILURE_CLASS] == "invalid"
    assert headers[failures.ATTEMPTS] == 1
    assert headers[failures.ORIGINAL_QUEUE] == queue
    assert json.loads(dead[0]["payload"])["command_id"] == "bad-1"


async def test_a_failing_inventory_append_is_retried_then_dead_lettered_and_redriven(
    settings: Settings,
    start_worker: StartWorker,
    reader: SqliteEventStore,
    amqp_url: str,
    management: Management,
    test_vhost: str,
) -> None:
    settings = settings.model_copy(update={"conflict_attempts": 1})
    await start_worker(settings)  # max_attempts=3, delays 0.2s, 0.4s
    queue, dlq = "inventory.commands", "inventory.commands.dlq"
    receive = command("ReceiveStock", sku="SKU-down", quantity=4)
    refused = RefusedAppends(settings.event_store, streams=(INVENTORY.stream("SKU-down"),))
    try:
        await publish(amqp_url, queue, receive)
        dead = await eventually(lambda: management.peek(test_vhost, dlq), what="a DLQ message")
        headers = dead[0]["properties"]["headers"]
        assert (headers[failures.ATTEMPTS], headers[failures.FAILURE_CLASS]) == (3, "transient")
        assert headers[failures.ORIGINAL_QUEUE] == queue
    finally:
        refused.release()
    management.move_messages(test_vhost, dlq, queue)
    events = await eventually(
        lambda: domain_events(reader, INVENTORY.stream("SKU-down")), what="the re-driven command"
    )
    assert [e.metadata["command_id"] for e in events] == [receive["command_id"]]
    await eventually(lambda: _is_zero(queue_depth(amqp_url, dlq)), what="an empty DLQ")


async def _is_zero(depth: Awaitable[int]) -> bool:
    return await depth == 0


async def test_the_gateway_publishes_inventory_and_payment_events_in_the_generic_envelope(
    settings: Settings, start_worker: StartWorker, amqp_url: str
) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        tap = await channel.declare_queue(exclusive=True)
        exchange = await channel.declare_exchange(
            "conveyor.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        for key in ("inventory.#", "payments.#"):
            await tap.bind(exchange, routing_key=key)
        await start_worker(settings, ("commands", "gateway"))
        # two SKUs: concurrent deliveries on one SKU could come in either order
        await publish(amqp_url, "inventory.commands", command("ReceiveStock", sku="R", quantity=1))
        await publish(
            amqp_url,
            "inventory.commands",
            command("ReserveStock", sku="S", order_id="o-1", quantity=2),
        )
        await publish(
            amqp_url, "payments.commands", command("RequestPayment", order_id="o-1", amount="5")
        )
        received: list[tuple[str, dict[str, Any]]] = []
        while len(received) < 3:
            message = await eventually(lambda: tap.get(fail=False, no_ack=True), what="an event")
            received.append((message.routing_key or "", json.loads(message.body)))
    by_key = dict(received)
    assert set(by_key) == {
        "inventory.stock_received",
        "inventory.reservation_refused",
        "payments.requested",
    }
    refused = by_key["inventory.reservation_refused"]
    assert (refused["aggregate"], refused["aggregate_id"], refused["version"]) == (
        "inventory",
        "S",
        1,
    )
    assert refused["data"] == {"order_id": "o-1", "sku": "S", "requested": 2, "available": 0}
    assert by_key["inventory.stock_received"]["data"] == {"quantity": 1}
    requested = by_key["payments.requested"]
    assert (requested["aggregate"], requested["aggregate_id"]) == ("payment", "o-1")
    assert requested["data"] == {"amount": "5.00", "currency": "EUR"}
