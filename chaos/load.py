"""The load generator: publishes commands with publisher confirms and records, for each one,
whether the broker confirmed it — only a confirmed command is one conveyor must not lose.
A publish that failed or timed out is *indeterminate* (it may or may not have reached the
queue): its effect, if any, is neither lost nor unexpected.

Also here: the outcome collector (every outcome on `conveyor.command-outcomes`, by
command_id) and the workloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from conveyor.aggregates import AGGREGATES
from messaging.cluster import connect_robust_any
from messaging.topology import COMMAND_OUTCOMES_EXCHANGE

Command = dict[str, Any]
OUTCOMES_QUEUE = "chaos.outcomes"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish: `key` names it in the records (a command_id, or a fuzz id)."""

    key: str
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    content_type: str | None = "application/json"
    without_message_id: bool = False
    """Publish through the management API, as the console does: aio-pika (aiormq) stamps a
    random message_id on every message published without one."""

    @classmethod
    def command(cls, command: Command) -> Outgoing:
        return cls(command["command_id"], json.dumps(command).encode())


@dataclass
class LoadRecord:
    sent: set[str] = field(default_factory=set)
    confirmed: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    """Publishes that raised or were not confirmed in time: indeterminate."""
    seconds: float = 0.0
    retried: set[str] = field(default_factory=set)
    """Messages published again after an unconfirmed attempt (a producer that retries)."""
    failed_attempts: int = 0
    attempt_errors: Counter[str] = field(default_factory=Counter)
    """What the producer saw on its failed attempts, by exception type."""
    confirmed_at: list[float] = field(default_factory=list)
    """time.monotonic() of each confirm, in order: the producer's view of an outage."""

    def merge(self, other: LoadRecord) -> None:
        self.sent |= other.sent
        self.confirmed |= other.confirmed
        self.failed.update(other.failed)
        self.seconds += other.seconds
        self.retried |= other.retried
        self.failed_attempts += other.failed_attempts
        self.attempt_errors += other.attempt_errors
        self.confirmed_at = sorted(self.confirmed_at + other.confirmed_at)


class LoadGenerator:
    """Publishes through the default exchange to the command queue, `window` confirms in
    flight, at most `rate` messages a second. Survives a broker restart (robust connection,
    failing over between the nodes of a cluster URL): publishes in between fail and are
    recorded as indeterminate, unless `retry_for` seconds are given: then an unconfirmed
    publish is sent again (same command_id) until confirmed or that time has passed, as a
    producer must do through a failover."""

    def __init__(
        self,
        amqp_url: str,
        queue: str,
        *,
        window: int = 100,
        rate: float | None = None,
        confirm_timeout: float = 15.0,
        console_publish: Callable[[Outgoing], Awaitable[None]] | None = None,
        retry_for: float | None = None,
    ) -> None:
        self.amqp_url = amqp_url
        self.queue = queue
        self.window = window
        self.rate = rate
        self.confirm_timeout = confirm_timeout
        self.console_publish = console_publish
        self.retry_for = retry_for
        self.record = LoadRecord()
        self._connection: AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def __aenter__(self) -> LoadGenerator:
        self._connection = await connect_robust_any(self.amqp_url)
        # An unroutable publish (no queue) must not count as confirmed.
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    async def publish(self, messages: Sequence[Outgoing]) -> LoadRecord:
        """Publish all of `messages`; returns (and adds to `self.record`) what happened."""
        assert self._channel is not None, "use `async with LoadGenerator(...)`"
        record = LoadRecord()
        started = time.monotonic()
        slots = asyncio.Semaphore(self.window)

        async def one(message: Outgoing) -> None:
            record.sent.add(message.key)
            give_up = time.monotonic() + (self.retry_for or 0)
            try:
                while True:
                    try:
                        await self._publish_one(message)
                    except Exception as error:
                        if time.monotonic() >= give_up:
                            record.failed[message.key] = f"{type(error).__name__}: {error}"
                            await asyncio.sleep(0.2)  # the connection is likely recovering
                            return
                        record.retried.add(message.key)
                        record.failed_attempts += 1
                        record.attempt_errors[type(error).__name__] += 1
                        await asyncio.sleep(0.5)
                    else:
                        record.confirmed.add(message.key)
                        record.confirmed_at.append(time.monotonic())
                        return
            finally:
                slots.release()

        tasks = []
        for index, message in enumerate(messages):
            if self.rate:
                delay = started + index / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await slots.acquire()
            tasks.append(asyncio.create_task(one(message)))
        await asyncio.gather(*tasks)
        record.seconds = time.monotonic() - started
        self.record.merge(record)
        return record

    async def _publish_one(self, message: Outgoing) -> None:
        assert self._channel is not None
        if message.without_message_id:
            if self.console_publish is None:
                raise RuntimeError("publishing without a message_id needs console_publish")
            await self.console_publish(message)
            return
        await self._channel.default_exchange.publish(
            aio_pika.Message(
                message.body,
                headers=message.headers or None,
                message_id=message.message_id,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self.queue,
            mandatory=True,
            timeout=self.confirm_timeout,
        )


class OutcomeCollector:
    """Every command outcome of every registered aggregate, by command_id, from a durable
    queue bound to the outcome exchange (declared before the load starts, so none is
    missed, even across a broker restart)."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.statuses: defaultdict[str, list[str]] = defaultdict(list)
        self.rules: dict[str, str] = {}
        """The rule named by a command's (last) rejection."""
        self.received = 0
        self.received_by_prefix: Counter[str] = Counter()
        """Outcomes per aggregate (routing-key prefix: `orders.`, `inventory.`, …)."""
        self.received_at: list[float] = []
        """time.monotonic() of each outcome: the workers' view of an outage, end to end."""
        self._connection: AbstractRobustConnection | None = None

    async def __aenter__(self) -> OutcomeCollector:
        self._connection = await connect_robust_any(self.amqp_url)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=500)
        exchange = await channel.declare_exchange(
            COMMAND_OUTCOMES_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            OUTCOMES_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
        )
        # Every registered aggregate's outcomes (`orders.command.…`, `inventory.command.…`,
        # `payments.command.…`): the process manager's commands answer there too.
        for prefix in AGGREGATES.routing_key_prefixes():
            await queue.bind(exchange, routing_key=f"{prefix}command.#")
        await queue.consume(self._on_outcome)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    async def _on_outcome(self, message: AbstractIncomingMessage) -> None:
        with contextlib.suppress(Exception):
            outcome = json.loads(message.body)
            self.statuses[str(outcome["command_id"])].append(str(outcome["status"]))
            if outcome["status"] == "rejected":
                self.rules[str(outcome["command_id"])] = str(outcome.get("rule"))
            self.received += 1
            self.received_by_prefix[(message.routing_key or "").split(".", 1)[0] + "."] += 1
            self.received_at.append(time.monotonic())
        await message.ack()

    def settled(self) -> set[str]:
        return set(self.statuses)

    def rejected(self) -> set[str]:
        return {cid for cid, statuses in self.statuses.items() if "rejected" in statuses}


# -- workloads ---------------------------------------------------------------------------------


def _command(type_: str, order_id: str, **fields: Any) -> Command:
    return {"type": type_, "command_id": str(uuid.uuid4()), "order_id": order_id, **fields}


@dataclass
class Workload:
    setup: list[Command]
    """Applied and waited for before the load starts: the orders the load adds items to."""
    commands: list[Command]


def order_workload(count: int, *, prefix: str, seed: int = 7) -> Workload:
    """`count` commands whose effects barely depend on their order: new orders (some later
    confirmed or cancelled), items with distinct SKUs on long-lived orders, and a few
    commands the rules reject on purpose. Rejections are outcomes, so they count as
    applied too."""
    rng = random.Random(seed)
    base = [f"{prefix}-base-{n}" for n in range(max(5, count // 100))]
    setup = [
        _command("CreateOrder", order_id, customer_id=f"cust-{n % 7}")
        for n, order_id in enumerate(base)
    ]
    commands: list[Command] = []
    created: list[str] = []
    for n in range(count):
        roll = rng.random()
        if roll < 0.3 or not created:
            order_id = f"{prefix}-new-{n}"
            created.append(order_id)
            commands.append(
                _command("CreateOrder", order_id, customer_id=f"cust-{rng.randrange(50)}")
            )
        elif roll < 0.8:
            commands.append(
                _command(
                    "AddItem",
                    rng.choice(base),
                    sku=f"SKU-{n}",
                    quantity=rng.randint(1, 5),
                    unit_price=f"{rng.randint(1, 9999) / 100:.2f}",
                )
            )
        elif roll < 0.9:
            commands.append(
                _command("AddItem", rng.choice(created), sku="BOOK", quantity=1, unit_price="4.50")
            )
        elif roll < 0.94:
            commands.append(_command("ConfirmOrder", rng.choice(created)))
        elif roll < 0.97:
            commands.append(_command("CancelOrder", rng.choice(created), reason="chaos"))
        else:  # rejected on purpose: quantity out of range
            commands.append(
                _command("AddItem", rng.choice(base), sku="BULK", quantity=5000, unit_price="1.00")
            )
    return Workload(setup, commands)


def one_order_workload(count: int, *, order_id: str) -> Workload:
    """`count` AddItem commands with distinct SKUs, all on one order."""
    return Workload(
        [_command("CreateOrder", order_id, customer_id="crowd")],
        [
            _command("AddItem", order_id, sku=f"SKU-{n}", quantity=1 + n % 3, unit_price="1.25")
            for n in range(count)
        ],
    )
