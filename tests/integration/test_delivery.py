"""Delivery holes on the RabbitMQ paths (issue 16), each against the real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from conveyor.bootstrap import build_broker
from conveyor.settings import Settings
from messaging import failures
from messaging.failures import FailureRouter
from messaging.topology import WorkQueue
from operations.dead_letters import describe, error_type_of


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        yield await connection.channel(publisher_confirms=True)


async def _deliveries(
    channel: aio_pika.abc.AbstractChannel, count: int, message_id: str
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """`count` real, unacked deliveries that share one message_id (copies of one event)."""
    queue = await channel.declare_queue(f"scratch.{uuid.uuid4().hex[:8]}", auto_delete=True)
    for number in range(count):
        await channel.default_exchange.publish(
            aio_pika.Message(f"copy {number}".encode(), message_id=message_id),
            routing_key=queue.name,
        )
    received = []
    for _ in range(count):
        message = await queue.get(no_ack=True, timeout=5)
        assert message is not None
        received.append(message)
    return received


async def test_copies_of_one_message_routed_at_once_are_each_confirmed_or_returned_as_their_own(
    settings: Settings, channel: aio_pika.abc.AbstractChannel
) -> None:
    """aiormq matches a basic.return to its publish by message_id. Two copies of one event
    routed at once on the shared channel, the first to a queue that is gone: its return must
    fail *its* route, not the other one's (which would ack an original whose copy was lost).
    """
    run = uuid.uuid4().hex[:8]
    gone = WorkQueue(f"projections.{run}.gone", (0.2,), 5)
    present = WorkQueue(f"projections.{run}.present", (0.2,), 5)
    for queue in present.retries():
        await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)
    broker = build_broker(settings)
    await broker.connect()
    try:
        to_gone = FailureRouter(broker, gone, max_attempts=3)
        to_present = FailureRouter(broker, present, max_attempts=3)
        first, second = await _deliveries(channel, 2, "event-1")
        outcomes = await asyncio.gather(
            to_gone.retry_later(first, RuntimeError("x")),
            to_present.retry_later(second, RuntimeError("y")),
            return_exceptions=True,
        )
    finally:
        await broker.stop()
    assert isinstance(outcomes[0], BaseException), outcomes
    assert not isinstance(outcomes[1], BaseException), outcomes
    tier = await channel.declare_queue(present.retry_queue_for(1), passive=True)
    copy = await tier.get(no_ack=True, timeout=5)
    assert copy is not None
    assert copy.body == b"copy 1"
    assert copy.message_id != "event-1"  # a copy has an id of its own...
    assert copy.headers[failures.ORIGINAL_MESSAGE_ID] == "event-1"  # ...and names the original
    assert failures.original_message_id(copy) == "event-1"
    assert describe(copy, present.dead_letter_queue).message_id == "event-1"
    await channel.queue_delete(tier.name)


def test_a_retry_copy_the_broker_dead_lettered_shows_the_brokers_reason_not_a_stale_one() -> None:
    """A retry copy carries the error of the attempt that sent it round the ladder; when the
    broker then dead-letters it (delivery limit, reject), that is the reason it is there."""
    stale = {
        failures.ERROR_TYPE: "ProjectionGap",
        failures.ATTEMPTS: 1,
        "x-death": [
            {"queue": "projections.x", "reason": b"delivery_limit", "count": 1},
            {"queue": "projections.x.retry.200ms", "reason": b"expired", "count": 1},
        ],
    }
    assert error_type_of(stale) == "delivery_limit"
    ours = {failures.ERROR_TYPE: "ProjectionGap", failures.DEAD_LETTERED_AT: "2026-12-01T00:00"}
    assert error_type_of(ours) == "ProjectionGap"
