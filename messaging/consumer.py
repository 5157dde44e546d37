"""What every conveyor consumer shares: manual acks, and a handler that never raises.

A subclass's `process` settles one delivery by publishing whatever it must (an outcome, a
retry copy, a dead letter), each confirmed by the broker; only then is the delivery acked.
If even that fails, the delivery is rejected so that the broker dead-letters it
(at-least-once) rather than losing it or redelivering it forever.

When the store is away (`process` raises StoreAway), the delivery is no fault of its own:
the consumer reports the outage (messaging/store_outage.py), which stops every consumer of
that store, and hands the delivery back unprocessed, its attempts unspent. So does every
delivery that reaches a paused consumer.
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

from conveyor.observability.logs import MESSAGE_IDS
from conveyor.observability.metrics import (
    HANDLING_SECONDS,
    MESSAGES_HANDED_BACK,
    MESSAGES_UNSETTLED,
)
from messaging.failures import FailureRouter, store_is_away
from messaging.store_outage import StillAway, StoreOutage
from messaging.topology import WorkQueue

logger = logging.getLogger("conveyor.consumer")

PUBLISH_TROUBLE = (
    TimeoutError,  # the publish timeout: a blocked connection (resource alarm)
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.AMQPChannelError,  # a channel-level error closed the publishing channel
    aiormq.exceptions.ChannelInvalidStateError,  # (aio_pika re-exports it)
)
"""Failures of the transport, not of the message. A broker nack or a return (PublishError,
DeliveryError) is not here: those still reject the delivery to its dead-letter queue."""
FIRST_HOLD_PAUSE = 1.0
MAX_HOLD_PAUSE = 10.0


class _DeliveryChannelClosed(Exception):
    """The delivery's own channel closed while it was held: it cannot be settled here."""


async def the_message_itself(message: Any) -> Any:
    """Hand the handler the delivery itself: parsing and its failures are ours to route.

    With the broker's `apply_types=False` this also keeps FastStream's dependency injection
    off the hot path: resolving a `RabbitMessage` parameter runs a sync function in a
    worker thread for every delivery, which costs throughput and lets deliveries overtake
    one another.
    """
    return message


class StoreAway(Exception):
    """Raised by `process` when the store failed, not the message (see `__cause__`)."""


DELIVERY_COUNT = "x-delivery-count"
"""Set by quorum queues on a redelivery: the returns counted against x-delivery-limit."""


class QueueConsumer:
    description = ""

    def __init__(
        self,
        broker: RabbitBroker,
        queue: WorkQueue,
        failures: FailureRouter,
        outage: StoreOutage | None = None,
    ) -> None:
        self.broker = broker
        self.queue = queue
        self.failures = failures
        self.outage = outage
        if outage is not None:
            outage.attach(self)
        self.subscriber: Any = None
        self.handed_back = 0
        self._handling_seconds = HANDLING_SECONDS.labels(queue.name)
        self._unsettled = MESSAGES_UNSETTLED.labels(queue.name)
        self._retried_in_place: set[int] = set()
        self._handed_back = MESSAGES_HANDED_BACK.labels(queue.name)

    def store_is_away(self, failure: BaseException) -> bool:
        """Whether `failure` should pause consuming rather than spend an attempt."""
        return self.outage is not None and store_is_away(failure)

    def register(self, *, prefetch: int, exchange: RabbitExchange | None = None) -> None:
        self.subscriber = self.broker.subscriber(
            self.queue.work(),
            exchange=exchange,
            # Returns raised here too: FastStream caches an exchange object on the channel
            # of the first subscriber bound to it, and every later broker.publish to that
            # exchange (the process manager's commands) goes out on this channel.
            channel=Channel(prefetch_count=prefetch, on_return_raises=True),
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
        # Until `process` knows better: the AMQP ids (see conveyor/observability/logs.py).
        ids = MESSAGE_IDS.set((raw.correlation_id, raw.message_id))
        try:
            if self.outage is not None and self.outage.paused:
                await self._hand_back(message)
                return
            failure: BaseException | None = None
            try:
                await self._process_holding_on_trouble(raw)
            except _DeliveryChannelClosed:
                return  # unacked on a closed channel: the broker redelivers it
            except StoreAway as away:
                assert self.outage is not None
                failure = await self.outage.report(
                    away.__cause__ or away, canary=lambda: self._process_as_canary(raw)
                )
                if isinstance(failure, StillAway):
                    await self._hand_back(message)
                    return
            except Exception as unsettled:
                failure = unsettled
            if failure is not None:
                self._unsettled.inc()
                logger.error(
                    "could not settle message %s; rejecting it",
                    raw.message_id,
                    exc_info=failure,
                )
                try:
                    await message.reject(requeue=False)
                except Exception:
                    logger.exception("reject failed: the broker will redeliver %s", raw.message_id)
                return
            await message.ack()
        finally:
            self._retried_in_place.discard(id(raw))
            self._handling_seconds.observe(time.perf_counter() - started)
            MESSAGE_IDS.reset(ids)

    async def _process_as_canary(self, raw: AbstractIncomingMessage) -> None:
        try:
            await self.process(raw)
        except StoreAway as away:
            raise StillAway() from away.__cause__

    async def process(self, raw: AbstractIncomingMessage) -> None:
        raise NotImplementedError

    async def _process_holding_on_trouble(self, raw: AbstractIncomingMessage) -> None:
        """`process`, again and again while the broker or the publishing channel fails us
        (a copy or outcome that timed out on a blocked connection, or died with its
        channel): that is not the message's fault, so it goes neither to the DLQ nor back to
        its queue. A requeue would spend the quorum queue's delivery limit (every requeue
        counts before RabbitMQ 4.3), and a healthy, already applied command would be
        dead-lettered by the broker once the trouble outlasted it. Held, it also keeps its
        prefetch slot, which pauses consuming while publishing is impossible. A repeat is
        recognised (`retried_in_place`): applied → its outcome again, duplicate → acked."""
        pause = FIRST_HOLD_PAUSE
        while True:
            try:
                await self.process(raw)
                return
            except PUBLISH_TROUBLE as trouble:
                self._unsettled.inc()
                logger.warning(
                    "could not publish for message %s (%s: %s); trying again in %.0fs, "
                    "the delivery held",
                    raw.message_id,
                    type(trouble).__name__,
                    trouble,
                    pause,
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_HOLD_PAUSE)
            try:
                raw.channel  # noqa: B018 - raises once the delivery's channel is closed
            except aiormq.exceptions.ChannelInvalidStateError:
                raise _DeliveryChannelClosed from None
            self._retried_in_place.add(id(raw))

    def retried_in_place(self, raw: AbstractIncomingMessage) -> bool:
        """This delivery's handling is being repeated after transport trouble."""
        return id(raw) in self._retried_in_place

    async def _hand_back(self, message: RabbitMessage) -> None:
        """Return an unprocessed delivery to its queue without spending its attempts.

        A requeue keeps its place at the head of the queue, but a quorum queue counts it
        against x-delivery-limit (RabbitMQ 3.x, and `reject` on 4.x too) and dead-letters it
        past the limit. So a delivery already handed back often is put back as a fresh copy
        instead (confirmed, then acked): behind newer messages, but never dead-lettered for
        an outage that was none of its doing.
        """
        raw = message.raw_message
        self.handed_back += 1
        self._handed_back.inc()
        try:
            returns = int((raw.headers or {}).get(DELIVERY_COUNT) or 0)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            returns = 0
        try:
            if returns + 1 >= max(self.queue.delivery_limit // 2, 1):
                await self.failures.hand_back(raw)
                await message.ack()
            else:
                await message.nack(requeue=True)
        except Exception:
            # The channel is gone with it: the broker puts the delivery back by itself.
            logger.exception("could not hand back %s; the broker will redeliver it", raw.message_id)

    # -- pausing (messaging/store_outage.py) --------------------------------------------
    # FastStream 0.7 has no pause: cancel and re-create the subscriber's consumer on its
    # own queue object. The robust channel forgets a cancelled consumer, so a reconnect
    # while paused does not resume it behind our back.

    async def stop_consuming(self) -> None:
        subscriber = self.subscriber
        queue, tag = subscriber._queue_obj, subscriber._consumer_tag
        if queue is None or tag is None:
            return
        subscriber._consumer_tag = None
        if not queue.channel.is_closed:
            await queue.cancel(tag)

    async def resume_consuming(self) -> None:
        subscriber = self.subscriber
        if subscriber._queue_obj is None or subscriber._consumer_tag is not None:
            return  # stopped for good (shutting down), or consuming already
        subscriber._consumer_tag = await subscriber._queue_obj.consume(
            subscriber.consume, no_ack=False, arguments=subscriber.consume_args
        )
