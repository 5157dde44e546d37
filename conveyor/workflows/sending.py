"""What the process manager puts on the wire: commands to the aggregates' command queues
(through `conveyor.commands`, like any producer) and its durable timeouts.

Every publish is persistent, mandatory and confirmed by the broker before the input that
caused it is acked. A command's AMQP `message_id` and body `command_id` are the id derived
from its cause (domain/fulfilment/outgoing.py), so sending it twice applies it once.

A timeout is a message on a quorum queue whose x-message-ttl is the workflow timeout; it
expires into the process manager's own input queue (at-least-once dead-lettering), where it
arrives as `FulfilmentTimedOut`. No timer lives in memory: a process that dies loses none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from faststream.rabbit import RabbitBroker, RabbitExchange

from domain.fulfilment.outgoing import OutgoingCommand, ScheduleTimeout

TIMED_OUT = "FulfilmentTimedOut"
"""The AMQP `type` (and body `type`) of a timeout message."""


def command_body(command: OutgoingCommand) -> dict[str, Any]:
    fields = {
        name: str(value) if isinstance(value, Decimal) else value
        for name, value in dataclasses.asdict(command.command).items()
    }
    return {"type": command.command_type, "command_id": command.command_id, **fields}


def timeout_body(timeout: ScheduleTimeout, scheduled_at: datetime) -> dict[str, Any]:
    return {
        "type": TIMED_OUT,
        "event_id": timeout.message_id,
        "order_id": timeout.order_id,
        "token": timeout.token,
        "deadline": timeout.deadline.isoformat(),
        "scheduled_at": scheduled_at.isoformat(),
    }


class WorkflowSender:
    def __init__(
        self,
        broker: RabbitBroker,
        commands_exchange: RabbitExchange,
        queues_by_command: Mapping[str, str],
        timeouts_queue: str,
        *,
        publish_timeout: float | None,
    ) -> None:
        self._broker = broker
        self._exchange = commands_exchange
        self._queues = dict(queues_by_command)
        self._timeouts_queue = timeouts_queue
        self._publish_timeout = publish_timeout
        self.sent = 0

    def queue_for(self, command: OutgoingCommand) -> str:
        try:
            return self._queues[command.command_type]
        except KeyError:
            raise LookupError(
                f"no registered aggregate takes {command.command_type} (is it registered?)"
            ) from None

    async def send(self, command: OutgoingCommand, correlation_id: str) -> None:
        await self._publish(
            command_body(command),
            exchange=self._exchange,
            routing_key=self.queue_for(command),
            message_id=command.command_id,
            correlation_id=correlation_id,
            message_type=command.command_type,
        )
        self.sent += 1

    async def schedule(self, scheduled: ScheduleTimeout, correlation_id: str) -> None:
        await self._publish(
            timeout_body(scheduled, datetime.now(UTC)),
            queue=self._timeouts_queue,
            message_id=scheduled.message_id,
            correlation_id=correlation_id,
            message_type=TIMED_OUT,
        )

    async def _publish(self, body: dict[str, Any], **options: Any) -> None:
        # A deadline around the whole call: aio-pika waits for a blocked connection before
        # its own publish timeout starts (see messaging/failures.py).
        async with asyncio.timeout(self._publish_timeout):
            await self._broker.publish(
                json.dumps(body).encode(),
                content_type="application/json",
                persist=True,
                mandatory=True,
                timeout=self._publish_timeout,
                **options,
            )
