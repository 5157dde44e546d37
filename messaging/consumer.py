"""What every conveyor consumer shares: manual acks, and a handler that never raises.

A subclass's `process` settles one delivery by publishing whatever it must (an outcome, a
retry copy, a dead letter), each confirmed by the broker; only then is the delivery acked.
If even that fails, the delivery is rejected so that the broker dead-letters it
(at-least-once) rather than losing it or redelivering it forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiormq.exceptions
from aio_pika.abc import AbstractIncomingMessage
from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitExchange
from faststream.rabbit.annotations import RabbitMessage

from messaging.failures import FailureRouter
from messaging.topology import WorkQueue
from observability.logs import MESSAGE_IDS
from observability.metrics import HANDLING_SECONDS, MESSAGES_UNSETTLED

logger = logging.getLogger("conveyor.consumer")

PUBLISH_TROUBLE = (
    TimeoutError,  # the publish timeout: a blocked connection (resource alarm)
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.AMQPChannelError,  # a channel-level error closed the publishing channel
    aiormq.exceptions.ChannelInvalidStateError,  # (aio_pika re-exports it)
)
"""Failures of the transport, not of the message. A broker nack or a return (PublishError,
DeliveryError) is not here: those still reject the delivery to its dead-letter queue."""
REQUEUE_PAUSE = 1.0


async def the_message_itself(message: Any) -> Any:
    """Hand the handler the delivery itself: parsing and its failures are ours to route.

    With the broker's `apply_types=False` this also keeps FastStream's dependency injection
    off the hot path: resolving a `RabbitMessage` parameter runs a sync function in a
    worker thread for every delivery, which costs throughput and lets deliveries overtake
    one another.
    """
    return message


class QueueConsumer:
    description = ""

    def __init__(self, broker: RabbitBroker, queue: WorkQueue, failures: FailureRouter) -> None:
        self.broker = broker
        self.queue = queue
        self.failures = failures
        self.subscriber: Any = None
        self._handling_seconds = HANDLING_SECONDS.labels(queue.name)
        self._unsettled = MESSAGES_UNSETTLED.labels(queue.name)

    def register(self, *, prefetch: int, exchange: RabbitExchange | None = None) -> None:
        self.subscriber = self.broker.subscriber(
            self.queue.work(),
            exchange=exchange,
            channel=Channel(prefetch_count=prefetch),
            ack_policy=AckPolicy.MANUAL,
            decoder=the_message_itself,
            no_reply=True,
            title=f"{self.queue.name}:consume",
            description=self.description,
        )
        self.subscriber(self.on_message)

    async def prepare(self) -> None:
        """Anything to set up before consuming, besides the broker topology."""

    async def on_message(self, message: RabbitMessage) -> None:  # see the_message_itself
        raw = message.raw_message
        started = time.perf_counter()
        # Until `process` knows better: the AMQP ids (see observability/logs.py).
        ids = MESSAGE_IDS.set((raw.correlation_id, raw.message_id))
        try:
            try:
                await self.process(raw)
            except PUBLISH_TROUBLE as trouble:
                # The broker or the publishing channel failed us, not the message: a copy or
                # outcome that timed out (a blocked connection) or died with its channel. Back
                # to the queue after a pause, never to the DLQ: the redelivery is recognised
                # (already applied → its outcome again, duplicate → acked).
                self._unsettled.inc()
                logger.warning(
                    "could not publish for message %s (%s: %s); returning it to the queue",
                    raw.message_id,
                    type(trouble).__name__,
                    trouble,
                )
                await asyncio.sleep(REQUEUE_PAUSE)
                try:
                    await message.nack(requeue=True)
                except Exception:
                    logger.exception("nack failed: the broker will redeliver %s", raw.message_id)
                return
            except Exception:
                self._unsettled.inc()
                logger.exception("could not settle message %s; rejecting it", raw.message_id)
                try:
                    await message.reject(requeue=False)
                except Exception:
                    logger.exception("reject failed: the broker will redeliver %s", raw.message_id)
                return
            await message.ack()
        finally:
            self._handling_seconds.observe(time.perf_counter() - started)
            MESSAGE_IDS.reset(ids)

    async def process(self, raw: AbstractIncomingMessage) -> None:
        raise NotImplementedError
