"""Queue names and arguments of one work queue with its retry ladder and dead-letter queue.

    <name>                 quorum work queue; broker-side dead-lettering to <name>.dlq only
                           as a safety net (delivery limit exceeded)
    <name>.retry.<N>ms     one quorum queue per delay tier; messages expire after N ms and
                           are dead-lettered back to <name> (per-tier TTL: per-message TTLs
                           would block behind each other)
    <name>.dlq             quorum dead-letter queue, kept until an operator acts; at most
                           `dead_letter_max_bytes` of bodies, then it refuses new dead
                           letters (reject-publish): the work queue stops moving instead of
                           a flood of junk filling the broker's disk

Dead-lettering from quorum queues is at-least-once only with
`x-dead-letter-strategy=at-least-once` AND `x-overflow=reject-publish`; without the
overflow setting RabbitMQ 3.10 silently falls back to at-most-once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faststream.rabbit import QueueType, RabbitQueue


def _quorum(name: str, routing_key: str = "", **arguments: Any) -> RabbitQueue:
    queue_arguments: Any = {k.replace("_", "-"): v for k, v in arguments.items()}
    return RabbitQueue(
        name,
        queue_type=QueueType.QUORUM,
        durable=True,
        arguments=queue_arguments,
        routing_key=routing_key,
    )


@dataclass(frozen=True, slots=True)
class WorkQueue:
    name: str
    retry_delays: tuple[float, ...]
    delivery_limit: int
    binding_key: str = ""
    """Routing key binding the work queue to its exchange (for queues fed by an exchange)."""
    dead_letter_max_bytes: int = 1024**3

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dlq"

    def retry_queue_for(self, failed_attempts: int) -> str:
        """The delay tier after the `failed_attempts`-th failure (1-based; last tier repeats)."""
        delay = self.retry_delays[min(failed_attempts, len(self.retry_delays)) - 1]
        return f"{self.name}.retry.{round(delay * 1000)}ms"

    def work(self) -> RabbitQueue:
        return _quorum(
            self.name,
            routing_key=self.binding_key,
            x_delivery_limit=self.delivery_limit,
            x_dead_letter_exchange="",
            x_dead_letter_routing_key=self.dead_letter_queue,
            x_dead_letter_strategy="at-least-once",
            x_overflow="reject-publish",
        )

    def retries(self) -> list[RabbitQueue]:
        return [
            _quorum(
                f"{self.name}.retry.{round(delay * 1000)}ms",
                x_message_ttl=round(delay * 1000),
                x_dead_letter_exchange="",
                x_dead_letter_routing_key=self.name,
                x_dead_letter_strategy="at-least-once",
                x_overflow="reject-publish",
            )
            for delay in dict.fromkeys(self.retry_delays)
        ]

    def dead_letters(self) -> RabbitQueue:
        return _quorum(
            self.dead_letter_queue,
            x_max_length_bytes=self.dead_letter_max_bytes,
            x_overflow="reject-publish",
        )

    def all_queues(self) -> list[RabbitQueue]:
        return [self.work(), *self.retries(), self.dead_letters()]


COMMANDS_EXCHANGE_NAME = "conveyor.commands"
"""Direct exchange where producers publish commands (routing key = the command queue's name).
Producers get write permission on this exchange only: the default exchange would let them
reach every queue, the projection queues included."""

COMMAND_OUTCOMES_EXCHANGE = "conveyor.command-outcomes"
"""Topic exchange where every command outcome is published (routing key
`orders.command.<status>`), so rejections are observable without reply_to."""


def delay_queue(work_queue: str, purpose: str, delay: float) -> RabbitQueue:
    """A quorum queue whose messages expire after `delay` seconds into `work_queue`:
    a durable delayed delivery (`<work_queue>.<purpose>.<N>ms`; one queue per delay, since
    per-message TTLs block behind each other and a queue's TTL cannot be changed)."""
    milliseconds = max(round(delay * 1000), 1)
    return _quorum(
        f"{work_queue}.{purpose}.{milliseconds}ms",
        x_message_ttl=milliseconds,
        x_dead_letter_exchange="",
        x_dead_letter_routing_key=work_queue,
        x_dead_letter_strategy="at-least-once",
        x_overflow="reject-publish",
    )
