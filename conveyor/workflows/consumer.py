"""The process manager's consumer: one integration event (or timeout) in, the workflow's
commands out, then the ack.

    malformed input         → dead-letter queue at once (no retries)
    an event it ignores     → acked
    the event store is away → consumers paused, delivery handed back (messaging/consumer.py)
    anything else           → retry ladder with growing delays, then dead-letter queue
    a publish in trouble    → the delivery is held and handled again (messaging/consumer.py):
                              the input is found applied and its commands are sent again

Order of work, for crash safety: append the workflow events (they record the commands) →
send the timeouts and commands, each confirmed → record the state for queries → ack. A
SIGKILL anywhere in between leaves the delivery unacked; its redelivery finds the input
applied and re-sends what it recorded, with the same command ids.
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import RabbitBroker

from conveyor.workflows.facts import InvalidInput, PendingConfirmation, parse_input
from conveyor.workflows.fulfilment import FulfilmentWorkflows, Reaction
from conveyor.workflows.sending import WorkflowSender
from conveyor.workflows.states import WorkflowStates
from messaging.consumer import PUBLISH_TROUBLE, QueueConsumer, StoreAway
from messaging.failures import FailureRouter
from messaging.store_outage import StoreOutage
from messaging.topology import WorkQueue

logger = logging.getLogger("conveyor.workflows")


class ProcessManagerConsumer(QueueConsumer):
    description = (
        "Integration events the order-fulfilment workflow reacts to (orders.confirmed, "
        "orders.cancelled, orders.fulfilled, "
        "inventory reservations, payment answers) and its own timeouts."
    )

    def __init__(
        self,
        broker: RabbitBroker,
        queue: WorkQueue,
        workflows: FulfilmentWorkflows,
        sender: WorkflowSender,
        states: WorkflowStates,
        failures: FailureRouter,
        *,
        max_message_bytes: int,
        outage: StoreOutage | None = None,
    ) -> None:
        super().__init__(broker, queue, failures, outage)
        self.workflows = workflows
        self.sender = sender
        self.states = states
        self._max_message_bytes = max_message_bytes
        self.applied = 0
        """Inputs that moved a workflow (events appended)."""
        self.replayed = 0
        """Inputs found applied before: their recorded commands sent again."""
        self.unchanged = 0
        """Inputs that added nothing (a fact already known from another event)."""
        self.ignored = 0
        """Events of types the workflow does not react to."""

    async def prepare(self) -> None:
        await self.states.prepare()

    async def process(self, raw: AbstractIncomingMessage) -> None:
        try:
            parsed = parse_input(raw.body, max_bytes=self._max_message_bytes)
        except InvalidInput as invalid:
            route = await self.failures.dead_letter(raw, invalid.error_type, invalid.message)
            logger.warning(
                "invalid workflow input %s dead-lettered to %s: %s",
                raw.message_id,
                route.destination,
                invalid.message,
            )
            return
        if parsed is None:
            self.ignored += 1
            return
        try:
            fact = (
                await self.workflows.order_confirmed(
                    parsed.event_id, parsed.occurred_at, parsed.order_id
                )
                if isinstance(parsed, PendingConfirmation)
                else parsed
            )
            reaction = await self.workflows.handle(fact)
        except Exception as failure:
            if self.store_is_away(failure):
                raise StoreAway() from failure
            await self._retry_later(raw, parsed.order_id, failure)
            return
        await self._send(raw, reaction)

    async def _send(self, raw: AbstractIncomingMessage, reaction: Reaction) -> None:
        order_id = reaction.state.order_id
        try:
            # The timeout first: an input that never gets its commands out (dead-lettered
            # after its append) still leaves a workflow that times out.
            for timeout in reaction.timeouts:
                await self.sender.schedule(timeout, correlation_id=order_id)
            for command in reaction.commands:
                await self.sender.send(command, correlation_id=order_id)
            await self.states.record(reaction.state)
        except Exception as failure:
            # Transport trouble (a blocked connection, a closed channel) propagates: the
            # delivery is held and handled again (messaging/consumer.py). Anything else —
            # a command returned unroutable, the read store refusing — takes the ladder.
            if isinstance(failure, PUBLISH_TROUBLE):
                raise
            await self._retry_later(raw, order_id, failure)
            return
        if reaction.replayed:
            self.replayed += 1
            logger.info(
                "workflow %s: input %s applied before; its %d command(s) sent again",
                order_id,
                raw.message_id,
                len(reaction.commands),
            )
        elif reaction.appended:
            self.applied += 1
        else:
            self.unchanged += 1
        if reaction.commands and not reaction.replayed:
            logger.debug(
                "workflow %s now %s: sent %s",
                order_id,
                reaction.state.status.value,
                ", ".join(c.command_type for c in reaction.commands),
            )

    async def _retry_later(
        self, raw: AbstractIncomingMessage, order_id: str, failure: BaseException
    ) -> None:
        route = await self.failures.retry_later(raw, failure)
        logger.warning(
            "workflow input %s (order %s) failed on attempt %d, sent to %s: %s: %s",
            raw.message_id,
            order_id,
            route.attempts,
            route.destination,
            type(failure).__name__,
            failure,
        )
