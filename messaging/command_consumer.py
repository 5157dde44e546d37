"""The command consumer: one RabbitMQ delivery in, exactly one settled outcome out.

    invalid input      → dead-letter queue at once (no retries), acked
    business rejection → recorded in the event store, then outcome "rejected" (reply +
                         outcome exchange), acked; a delivery that may have been handled
                         before (redelivered, a retry copy, a re-driven dead letter) is
                         answered from that record rather than decided again
    the store is away  → consumers paused, delivery handed back unprocessed, attempts
                         unspent (messaging/consumer.py)
    anything else      → retry ladder with growing delays, then dead-letter queue, acked
Acks are manual and come only after the copy or outcome was confirmed by the broker (see
messaging/consumer.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange

from conveyor.application.aggregates import AggregateDefinition
from conveyor.application.commands import CommandHandler, CommandOutcome
from conveyor.observability.logs import bind_message
from conveyor.observability.metrics import MESSAGES_HANDLED, LabelCache
from messaging.command_messages import InvalidCommandMessage, parse_command
from messaging.consumer import QueueConsumer, StoreAway
from messaging.failures import (
    HANDED_BACK,
    FailureRouter,
    original_message_id,
    previous_attempts,
    was_dead_lettered,
)
from messaging.store_outage import StoreOutage
from messaging.topology import COMMAND_OUTCOMES_EXCHANGE, COMMANDS_EXCHANGE_NAME, WorkQueue

logger = logging.getLogger("conveyor.commands")

OUTCOMES_EXCHANGE = RabbitExchange(COMMAND_OUTCOMES_EXCHANGE, type=ExchangeType.TOPIC, durable=True)
COMMANDS_EXCHANGE = RabbitExchange(COMMANDS_EXCHANGE_NAME, type=ExchangeType.DIRECT, durable=True)


class CommandConsumer(QueueConsumer):
    description = "Commands (JSON) of one aggregate. See messaging/contracts/."

    def __init__(
        self,
        broker: RabbitBroker,
        queue: WorkQueue,
        aggregate: AggregateDefinition,
        handler: CommandHandler,
        failures: FailureRouter,
        *,
        max_message_bytes: int,
        publish_timeout: float | None = None,
        outage: StoreOutage | None = None,
    ) -> None:
        super().__init__(broker, queue, failures, outage)
        self._aggregate = aggregate
        self._handler = handler
        self._max_message_bytes = max_message_bytes
        self._publish_timeout = publish_timeout
        self._handled = LabelCache(MESSAGES_HANDLED, queue.name)

    async def process(self, raw: AbstractIncomingMessage) -> None:
        try:
            envelope = parse_command(
                raw.body,
                aggregate=self._aggregate,
                # a retry or dead-letter copy carries the original id in a header
                message_id=original_message_id(raw),
                correlation_id=raw.correlation_id,
                max_bytes=self._max_message_bytes,
            )
        except InvalidCommandMessage as invalid:
            route = await self.failures.dead_letter(raw, invalid.error_type, invalid.message)
            logger.warning(
                "invalid command message %s dead-lettered to %s: %s",
                raw.message_id,
                route.destination,
                invalid.message,
            )
            return
        bind_message(envelope.correlation_id, envelope.causation_id)
        try:
            seen_before = self.seen_before(raw)
            if seen_before:
                envelope = dataclasses.replace(envelope, seen_before=True)
            outcome = await self._handler.handle(envelope)
        except Exception as failure:
            if self.store_is_away(failure):
                raise StoreAway() from failure
            route = await self.failures.retry_later(raw, failure)
            logger.warning(
                "command %s (%s) failed on attempt %d, sent to %s: %s: %s",
                envelope.command_id,
                type(envelope.command).__name__,
                route.attempts,
                route.destination,
                type(failure).__name__,
                failure,
                extra={"correlation_id": envelope.correlation_id},
            )
            return
        command_type = type(envelope.command).__name__
        logger.log(
            logging.DEBUG if outcome.status == "accepted" else logging.INFO,
            "command %s %s %s: %s%s (version %d)%s",
            envelope.command_id,
            command_type,
            envelope.aggregate_id,
            outcome.status,
            " (from its record: seen before)" if outcome.replayed else "",
            outcome.version,
            f" — {outcome.reason}" if outcome.reason else "",
            extra={"correlation_id": envelope.correlation_id},
        )
        await self._publish_outcome(raw, outcome, envelope.correlation_id, seen_before)
        self._handled(command_type, outcome.status).inc()

    def seen_before(self, raw: AbstractIncomingMessage) -> bool:
        """May this command have been handled (and its outcome published) already?

        * `redelivered`: the broker delivered it before and got no ack — the worker died or
          its channel closed, possibly after publishing the outcome;
        * a retry copy (our attempts header): an earlier attempt failed, possibly after
          recording a rejection (say, the store's answer to the append timed out);
        * a re-driven dead letter: an earlier attempt could not settle it, e.g. the outcome
          publish failed after the rejection was recorded;
        * a copy handed back during a store outage: its attempt may have reached the store.
        * a delivery held and handled again after transport trouble (`retried_in_place`).
        A first delivery carries none of these, but a client may have resent the command
        under the same command_id: the handler reads the command's own rejection record
        every time; "seen before" adds only the records kept by earlier versions.
        """
        headers = raw.headers or {}
        return bool(
            raw.redelivered
            or self.retried_in_place(raw)
            or previous_attempts(headers, self.queue.name) > 0
            or was_dead_lettered(headers, self.queue.name)
            or bool(headers.get(HANDED_BACK))
        )

    async def _publish_outcome(
        self,
        raw: AbstractIncomingMessage,
        outcome: CommandOutcome,
        correlation_id: str,
        seen_before: bool,
    ) -> None:
        if outcome.status == "duplicate" and seen_before:
            # This very delivery was accepted before; if the worker died between the append
            # and the outcome, nobody heard so. Publish that original outcome again (same
            # body and message_id: a consumer that did hear it dedupes), as for a rejection.
            accepted = dataclasses.replace(outcome, status="accepted")
            await self._publish_to_exchange(
                json.dumps(accepted.as_message()).encode(), accepted, correlation_id
            )
        body = json.dumps(outcome.as_message()).encode()
        await self._publish_to_exchange(body, outcome, correlation_id)
        if raw.reply_to:
            try:
                async with asyncio.timeout(self._publish_timeout):  # see _publish_to_exchange
                    await self.broker.publish(
                        body,
                        queue=raw.reply_to,
                        content_type="application/json",
                        correlation_id=raw.correlation_id or correlation_id,
                        message_type="CommandOutcome",
                        mandatory=False,
                        timeout=self._publish_timeout,
                    )
            except Exception:  # the caller may have gone away; the outcome is published anyway
                logger.warning("could not reply to %s for %s", raw.reply_to, outcome.command_id)

    async def _publish_to_exchange(
        self, body: bytes, outcome: CommandOutcome, correlation_id: str
    ) -> None:
        # aio-pika waits for a blocked connection *before* its own publish timeout starts:
        # only a deadline around the whole call bounds it.
        async with asyncio.timeout(self._publish_timeout):
            await self._publish_outcome_now(body, outcome, correlation_id)

    async def _publish_outcome_now(
        self, body: bytes, outcome: CommandOutcome, correlation_id: str
    ) -> None:
        await self.broker.publish(
            body,
            exchange=OUTCOMES_EXCHANGE,
            routing_key=f"{outcome.routing_key_prefix}command.{outcome.status}",
            content_type="application/json",
            correlation_id=correlation_id,
            message_id=f"{outcome.command_id}:{outcome.status}",
            message_type="CommandOutcome",
            persist=True,
            mandatory=False,
            timeout=self._publish_timeout,
        )
