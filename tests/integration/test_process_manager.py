"""The order-fulfilment process manager against the real RabbitMQ and SQLite: command
workers, the gateway and the process manager wired as `conveyor run` wires them; the test
plays the payment provider.

Effects are counted in the aggregates' own streams: a reservation, commit, release,
payment request or fulfilment that happened twice would be there twice."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from conveyor.aggregates import AGGREGATES
from conveyor.application.aggregates import AggregateDefinition
from conveyor.bootstrap import command_queue, fulfilment_timeouts_queue
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.gateway.relay import EVENTS
from conveyor.settings import Settings
from conveyor.workflows.fulfilment import FulfilmentWorkflows
from conveyor.workflows.states import WorkflowStates
from domain.fulfilment.events import CODEC
from domain.fulfilment.workflow import WorkflowStatus, rebuild, stream_name
from tests.integration.test_status import status_until
from tests.processes import conveyor_env, start_conveyor
from tests.rabbit import eventually, publish, queue_depth
from workers.host import WorkerHost

pytestmark = [pytest.mark.rabbitmq]

ALL = ("commands", "gateway", "process-manager")


def _of(command_type: str) -> AggregateDefinition:
    definition = AGGREGATES.of_command_type(command_type)
    assert definition is not None, f"{command_type} is not registered"
    return definition


class Shop:
    """Send commands as producers do, read effects from the store."""

    def __init__(self, settings: Settings, store: SqliteEventStore) -> None:
        self.settings = settings
        self.store = store
        self.orders = _of("CreateOrder")
        self.inventory = _of("ReserveStock")
        self.payments = _of("AuthorizePayment")

    async def send(self, command: dict[str, Any]) -> None:
        definition = _of(command["type"])
        command.setdefault("command_id", str(uuid.uuid4()))
        await publish(
            self.settings.amqp_url,
            command_queue(self.settings, definition).name,
            command,
            message_id=command["command_id"],
        )

    async def stock(self, sku: str, quantity: int) -> None:
        await self.send({"type": "ReceiveStock", "sku": sku, "quantity": quantity})

    async def confirmed_order(self, order_id: str, lines: dict[str, int]) -> None:
        await self.send({"type": "CreateOrder", "order_id": order_id, "customer_id": "c"})
        for sku, quantity in lines.items():
            await self.send(
                {
                    "type": "AddItem",
                    "order_id": order_id,
                    "sku": sku,
                    "quantity": quantity,
                    "unit_price": "2.50",
                }
            )
        await self.send({"type": "ConfirmOrder", "order_id": order_id})

    async def types(self, definition: AggregateDefinition, aggregate_id: str) -> Counter[str]:
        stored = await self.store.read_stream(definition.stream(aggregate_id))
        return Counter(e.type for e in stored if e.type != "CommandRejected")

    async def order_status(self, order_id: str) -> str | None:
        state = self.orders.fold(
            order_id, await self.store.read_stream(self.orders.stream(order_id))
        )
        return str(state.status) if state.status is not None else None

    async def workflow(self, order_id: str) -> Any:
        stored = await self.store.read_stream(stream_name(order_id))
        return rebuild(
            order_id, [CODEC.from_data(e.type, e.schema_version, e.data) for e in stored]
        )

    async def until_status(self, order_id: str, status: str, within: float = 20) -> None:
        async def reached() -> bool:
            return await self.order_status(order_id) == status

        await eventually(reached, within=within, what=f"order {order_id} {status}")

    async def payment_requested(self, order_id: str) -> bool:
        return (await self.types(self.payments, order_id))["PaymentRequested"] == 1

    async def authorize(self, order_id: str, amount: str) -> None:
        await eventually(lambda: self.payment_requested(order_id), what="payment requested")
        await self.send(
            {
                "type": "AuthorizePayment",
                "command_id": f"authorize-{order_id}",
                "order_id": order_id,
                "amount": amount,
                "provider_reference": f"psp-{order_id}",
            }
        )


@pytest.fixture
async def shop(settings: Settings, reader: SqliteEventStore) -> Shop:
    return Shop(settings, reader)


async def test_a_confirmed_order_is_reserved_paid_committed_and_fulfilled(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    shop: Shop,
) -> None:
    host = await start_worker(settings, ALL)
    await shop.stock("sku-a", 10)
    await shop.stock("sku-b", 10)
    await shop.confirmed_order("o-happy", {"sku-a": 2, "sku-b": 3})
    await shop.authorize("o-happy", "12.50")
    await shop.until_status("o-happy", "fulfilled")

    for sku in ("sku-a", "sku-b"):
        effects = await shop.types(shop.inventory, sku)
        assert effects["StockReserved"] == 1
        assert effects["ReservationCommitted"] == 1
        assert effects["ReservationReleased"] == 0
    assert (await shop.types(shop.payments, "o-happy"))["PaymentAuthorized"] == 1
    workflow = await shop.workflow("o-happy")
    assert workflow.status is WorkflowStatus.FULFILLED
    assert host.read_store is not None
    summary = await WorkflowStates(host.read_store).get("o-happy")
    assert summary is not None
    assert summary.status == "fulfilled"
    # Its own stream is no aggregate's: the gateway never published it.
    assert AGGREGATES.of_stream(stream_name("o-happy")) is None


async def test_a_refused_reservation_releases_what_was_reserved_and_cancels_the_order(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    shop: Shop,
) -> None:
    await start_worker(settings, ALL)
    await shop.stock("sku-plenty", 10)
    await shop.stock("sku-scarce", 1)
    await shop.confirmed_order("o-refused", {"sku-plenty": 2, "sku-scarce": 5})
    await shop.until_status("o-refused", "cancelled")

    state = shop.orders.fold(
        "o-refused", await shop.store.read_stream(shop.orders.stream("o-refused"))
    )
    assert "stock unavailable: sku sku-scarce" in state.cancel_reason

    async def released() -> bool:
        return (await shop.types(shop.inventory, "sku-plenty"))["ReservationReleased"] == 1

    await eventually(released, what="sku-plenty released")
    assert (await shop.types(shop.inventory, "sku-scarce"))["StockReserved"] == 0
    assert (await shop.types(shop.payments, "o-refused"))["PaymentRequested"] == 0


async def test_a_declined_payment_releases_the_stock_and_cancels_the_order(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    shop: Shop,
) -> None:
    await start_worker(settings, ALL)
    await shop.stock("sku-d", 10)
    await shop.confirmed_order("o-declined", {"sku-d": 4})
    await eventually(lambda: shop.payment_requested("o-declined"), what="payment requested")
    await shop.send({"type": "DeclinePayment", "order_id": "o-declined", "reason": "card expired"})
    await shop.until_status("o-declined", "cancelled")

    async def released() -> bool:
        return (await shop.types(shop.inventory, "sku-d"))["ReservationReleased"] == 1

    await eventually(released, what="sku-d released")
    workflow = await shop.workflow("o-declined")
    assert workflow.cancel_reason == "payment declined: card expired"
    assert (await shop.types(shop.inventory, "sku-d"))["ReservationCommitted"] == 0


async def test_an_unanswered_payment_times_out_releases_and_cancels(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    shop: Shop,
) -> None:
    settings = settings.model_copy(update={"fulfilment_timeout": 1.0})
    await start_worker(settings, ALL)
    await shop.stock("sku-t", 10)
    await shop.confirmed_order("o-late", {"sku-t": 1})
    await shop.until_status("o-late", "cancelled", within=15)

    async def released() -> bool:
        return (await shop.types(shop.inventory, "sku-t"))["ReservationReleased"] == 1

    await eventually(released, what="sku-t released")
    workflow = await shop.workflow("o-late")
    assert workflow.cancel_reason == "timed out after 1 s"
    # A payment answering after the cancellation is refunded, never committed.
    await shop.send(
        {
            "type": "AuthorizePayment",
            "order_id": "o-late",
            "amount": "2.50",
            "provider_reference": "psp-late",
        }
    )

    async def refunded() -> bool:
        return (await shop.types(shop.payments, "o-late"))["PaymentRefunded"] == 1

    await eventually(refunded, what="late payment refunded")
    assert (await shop.types(shop.inventory, "sku-t"))["ReservationCommitted"] == 0


class Capture:
    """A queue of the test's own bound to every integration event: the inputs the process
    manager saw, to publish again."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.bodies: list[dict[str, Any]] = []
        self._connection: Any = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect(self.amqp_url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(EVENTS.name, type="topic", durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="#")

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            self.bodies.append(json.loads(message.body))
            await message.ack()

        await queue.consume(keep)

    async def stop(self) -> None:
        await self._connection.close()


@pytest.fixture
async def capture(settings: Settings) -> AsyncIterator[Capture]:
    captured = Capture(settings.amqp_url)
    await captured.start()
    yield captured
    await captured.stop()


async def test_duplicated_and_reordered_inputs_change_nothing(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    shop: Shop,
    capture: Capture,
) -> None:
    host = await start_worker(settings, ALL)
    pm = host.process_manager
    assert pm is not None
    await shop.stock("sku-x", 10)
    await shop.stock("sku-y", 10)

    # Out of order: a copy of a reservation reaches the workflow before the confirmation.
    early = {
        "event_id": str(uuid.uuid4()),
        "type": "StockReserved",
        "schema_version": 1,
        "aggregate": "inventory",
        "aggregate_id": "sku-y",
        "version": 2,
        "occurred_at": "2026-12-01T10:00:00Z",
        "data": {"order_id": "o-dup", "quantity": 1},
    }
    await publish(settings.amqp_url, settings.process_manager_queue, early, type="StockReserved")
    await shop.confirmed_order("o-dup", {"sku-x": 2, "sku-y": 1})
    await shop.authorize("o-dup", "7.50")
    await shop.until_status("o-dup", "fulfilled")

    async def captured_all() -> bool:
        return any(b.get("type") == "OrderFulfilled" for b in capture.bodies)

    await eventually(captured_all, what="OrderFulfilled captured")
    inputs = [
        b
        for b in capture.bodies
        if b.get("type")
        in ("OrderConfirmed", "StockReserved", "PaymentAuthorized", "ReservationRefused")
    ]
    assert len(inputs) == 4  # confirmed, two reservations, authorized
    before = (pm.applied, pm.replayed + pm.unchanged)
    # Every input again, twice, last first: each is recognised as applied.
    for body in [*reversed(inputs), *inputs]:
        await publish(settings.amqp_url, settings.process_manager_queue, body, type=body["type"])

    async def replayed_all() -> bool:
        # the real reservation of sku-y added nothing (the early copy had told it): unchanged
        return pm.replayed + pm.unchanged - before[1] >= 8

    await eventually(replayed_all, what="every copy handled")
    assert pm.applied == before[0]
    await asyncio.sleep(0.5)  # the re-sent commands reach their handlers (as duplicates)
    for sku in ("sku-x", "sku-y"):
        effects = await shop.types(shop.inventory, sku)
        assert (effects["StockReserved"], effects["ReservationCommitted"]) == (1, 1), sku
    assert (await shop.types(shop.payments, "o-dup"))["PaymentRequested"] == 1
    assert (await shop.types(shop.orders, "o-dup"))["OrderFulfilled"] == 1
    assert await queue_depth(settings.amqp_url, f"{settings.process_manager_queue}.dlq") == 0


async def test_a_process_manager_killed_mid_way_loses_no_workflow_and_doubles_no_effect(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    shop: Shop,
    tmp_path: Path,
) -> None:
    # Command workers and the gateway in this process; the process manager in its own, to
    # be SIGKILLed while workflows are in flight.
    await start_worker(settings, ("commands", "gateway"))
    log = tmp_path / "pm.log"

    def start_pm() -> Any:
        return start_conveyor(settings, "process-manager", log, CONVEYOR_PREFETCH="20")

    pm = start_pm()
    skus = [f"sku-k{n}" for n in range(4)]
    for sku in skus:
        await shop.stock(sku, 1000)
    orders = [f"o-kill-{n}" for n in range(40)]
    lines = {order: {skus[n % 4]: 1, skus[(n + 1) % 4]: 2} for n, order in enumerate(orders)}
    await eventually(lambda: "worker started" in log.read_text(), within=30, what="pm started")
    for order in orders:
        await shop.confirmed_order(order, lines[order])

    answered: set[str] = set()

    async def play_provider() -> None:
        while True:
            for order in orders:
                if order not in answered and await shop.payment_requested(order):
                    answered.add(order)
                    await shop.send(
                        {
                            "type": "AuthorizePayment",
                            "command_id": f"authorize-{order}",
                            "order_id": order,
                            "amount": "7.50",
                            "provider_reference": f"psp-{order}",
                        }
                    )
            await asyncio.sleep(0.05)

    provider = asyncio.create_task(play_provider())
    try:

        async def some_in_flight() -> bool:
            started = sum([(await shop.workflow(order)).version > 0 for order in orders])
            return started >= 5

        await eventually(some_in_flight, what="workflows in flight")
        pm.send_signal(signal.SIGKILL)
        pm.wait()
        ended = [(await shop.workflow(order)).is_terminal for order in orders]
        assert not all(ended), "killed too late: every workflow had ended"
        pm = start_pm()

        async def all_fulfilled() -> bool:
            for order in orders:
                if await shop.order_status(order) != "fulfilled":
                    return False
            return True

        await eventually(all_fulfilled, within=60, what="every workflow fulfilled")

        # The commits follow orders.fulfilled, which the (restarted) process manager reads.
        async def all_committed() -> bool:
            for sku in skus:
                stored = await shop.store.read_stream(shop.inventory.stream(sku))
                if sum(e.type == "ReservationCommitted" for e in stored) < 20:
                    return False
            return True

        await eventually(all_committed, what="every reservation committed")
        await asyncio.sleep(0.5)  # anything doubled would land now
    finally:
        provider.cancel()
        if pm.poll() is None:
            pm.send_signal(signal.SIGTERM)
            pm.wait(timeout=20)

    for sku in skus:
        stored = await shop.store.read_stream(shop.inventory.stream(sku))
        per_order = Counter((e.type, e.data.get("order_id")) for e in stored)
        assert all(count == 1 for count in per_order.values()), per_order
        assert sum(e.type == "ReservationCommitted" for e in stored) == sum(
            sku in lines[order] for order in orders
        )
        assert sum(e.type == "ReservationReleased" for e in stored) == 0
    for order in orders:
        assert (await shop.types(shop.payments, order))["PaymentRequested"] == 1
        assert (await shop.types(shop.orders, order))["OrderFulfilled"] == 1


async def test_a_workflow_whose_timeout_was_lost_shows_as_stuck_in_status_and_queries(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    shop: Shop,
) -> None:
    settings = settings.model_copy(
        update={"fulfilment_timeout": 3.0, "fulfilment_stuck_margin": 0.5}
    )
    host = await start_worker(settings, (*ALL, "http"))
    await shop.stock("sku-s", 5)
    await shop.confirmed_order("o-stuck", {"sku-s": 1})
    await eventually(lambda: shop.payment_requested("o-stuck"), what="payment requested")
    # The timeout is lost (an operator purged the queue): nothing will ever end the workflow.
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        timeouts = await channel.get_queue(fulfilment_timeouts_queue(settings).name)
        assert await timeouts.purge()
    # And one input that cannot be read is dead-lettered.
    await publish(settings.amqp_url, settings.process_manager_queue, b"{", type="OrderConfirmed")

    report = await status_until(
        settings,
        lambda r: bool(r.stuck_workflows) and r.workflows is not None and r.dead_letters > 0,
        "a stuck workflow and a dead-lettered input",
    )
    assert not report.healthy
    assert [s.order_id for s in report.stuck_workflows] == ["o-stuck"]
    assert any("workflow(s) stuck" in reason and "o-stuck" in reason for reason in report.reasons)
    assert any("dead-lettered in" in reason for reason in report.reasons)
    assert report.as_json()["workflows"]["stuck"][0]["status"] == "awaiting_payment"

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{host.http_port}") as http:
        listed = (await http.get("/workflows", params={"stuck": "true"})).json()
        one = await http.get("/workflows/o-stuck")
    assert [w["order_id"] for w in listed["workflows"]] == ["o-stuck"]
    assert one.json()["waiting_for"] == "payment authorization"

    cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "conveyor", "workflows", "stuck", "--json"],
        env=conveyor_env(settings, CONVEYOR_FULFILMENT_STUCK_MARGIN="0.5"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cli.returncode == 1, cli.stderr
    listed_by_cli = json.loads(cli.stdout)
    assert listed_by_cli["count"] == 1
    assert listed_by_cli["dead_lettered_inputs"] == 1


async def test_a_crash_after_the_append_before_sending_is_repaired_by_the_redelivery(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    shop: Shop,
) -> None:
    """The window a SIGKILL rarely hits, made certain: the workflow events are appended
    (they record the commands), nothing was sent, the input is still queued."""
    await start_worker(settings, ("commands", "gateway"))  # the input waits in its queue
    await shop.stock("sku-c", 5)
    await shop.confirmed_order("o-crash", {"sku-c": 2})

    async def confirmation() -> Any:
        stored = await shop.store.read_stream(shop.orders.stream("o-crash"))
        return next((e for e in stored if e.type == "OrderConfirmed"), None)

    confirmed = await eventually(confirmation, what="order confirmed")
    await eventually(
        lambda: queue_depth(settings.amqp_url, settings.process_manager_queue),
        what="orders.confirmed queued for the process manager",
    )
    crashed = FulfilmentWorkflows(shop.store, shop.orders, timeout=timedelta(seconds=30))
    fact = await crashed.order_confirmed(str(confirmed.event_id), confirmed.occurred_at, "o-crash")
    first = await crashed.handle(fact)
    assert [c.command_type for c in first.commands] == ["ReserveStock"]
    assert (await shop.types(shop.inventory, "sku-c"))["StockReserved"] == 0

    host = await start_worker(settings, ("process-manager",))
    assert host.process_manager is not None
    await eventually(lambda: shop.payment_requested("o-crash"), what="payment requested")
    assert host.process_manager.replayed == 1  # the queued confirmation: applied before
    stored = await shop.store.read_stream(shop.inventory.stream("sku-c"))
    reservations = [e for e in stored if e.type == "StockReserved"]
    assert len(reservations) == 1
    assert reservations[0].metadata.get("command_id") == first.commands[0].command_id


# -- review2: interleavings that lose or stall a workflow ----------------------------------


async def _unbind_command_queue(settings: Settings, definition: AggregateDefinition) -> None:
    """The aggregate's command queue loses its binding to `conveyor.commands` (an operator's
    slip, a queue re-created by hand): a mandatory publish of its commands comes back."""
    name = command_queue(settings, definition).name
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(name)
        await queue.unbind("conveyor.commands", routing_key=name)


async def test_a_command_returned_unroutable_is_not_taken_for_sent(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    shop: Shop,
) -> None:
    """The sender publishes mandatory, on the default channel opened with on_return_raises:
    a return should fail the send and send the input down the retry ladder. But FastStream's
    declarer caches exchange objects by exchange only, not by channel: the command workers'
    subscribers (bound to `conveyor.commands`) cache it on THEIR channel, opened with
    on_return_raises=False, and every later `broker.publish(exchange=conveyor.commands)`
    goes out there. The return resolves the confirmation as a success: ReserveStock is
    lost, the confirmation acked, the workflow waits for a reservation nobody will make."""
    settings = settings.model_copy(update={"fulfilment_timeout": 60.0})
    host = await start_worker(settings, ALL)  # as `conveyor run` and docker-compose.yml do
    pm = host.process_manager
    assert pm is not None
    await _unbind_command_queue(settings, shop.inventory)
    await shop.confirmed_order("o-returned", {"sku-r": 1})
    await eventually(lambda: shop.workflow("o-returned"), what="workflow started")

    async def dead_lettered() -> int:
        return await queue_depth(settings.amqp_url, f"{settings.process_manager_queue}.dlq")

    await eventually(dead_lettered, within=15, what="the confirmation through the ladder to DLQ")
    assert pm.applied == 0, "the input was acked as if ReserveStock had been delivered"


async def test_a_confirmation_dead_lettered_after_its_append_still_has_its_timeout_and_shows(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    shop: Shop,
) -> None:
    """The workflow events are appended, then a command cannot be sent on any attempt: the
    input takes the ladder to the DLQ. The workflow exists in the store, but its timeout is
    scheduled only after the commands: nothing will ever end it. (Its read-model document,
    written last, is missing too; the dead letter is what `conveyor status` shows.)
    (Fails first on the returned command taken for sent, see the test above.)"""
    settings = settings.model_copy(update={"fulfilment_timeout": 60.0})
    host = await start_worker(settings, ALL)
    pm = host.process_manager
    assert pm is not None
    await _unbind_command_queue(settings, shop.inventory)
    await shop.confirmed_order("o-unroutable", {"sku-u": 1})
    await eventually(
        lambda: queue_depth(settings.amqp_url, f"{settings.process_manager_queue}.dlq"),
        within=15,
        what="the confirmation dead-lettered",
    )
    assert (await shop.workflow("o-unroutable")).started  # appended before the sends
    timeouts = fulfilment_timeouts_queue(settings).name
    # one per attempt, all with one message id: the first to expire ends the workflow
    assert await queue_depth(settings.amqp_url, timeouts) >= 1, "no timeout will ever end it"


async def test_an_order_cancelled_by_its_customer_mid_workflow_is_never_committed(
    settings: Settings,
    start_worker: Callable[..., Awaitable[WorkerHost]],
    shop: Shop,
) -> None:
    """CancelOrder is accepted on a confirmed order (domain/orders/order.py), but the workflow
    does not react to OrderCancelled: it goes on, the provider authorizes the payment it
    requested, and the workflow commits the stock of a cancelled order (its FulfilOrder is
    then rejected), never releasing it nor refunding the payment."""
    await start_worker(settings, ALL)
    await shop.stock("sku-cc", 5)
    await shop.confirmed_order("o-cc", {"sku-cc": 1})
    await eventually(lambda: shop.payment_requested("o-cc"), what="payment requested")
    await shop.send({"type": "CancelOrder", "order_id": "o-cc", "reason": "customer changed mind"})
    await shop.until_status("o-cc", "cancelled")
    await shop.authorize("o-cc", "2.50")

    async def settled() -> bool:
        effects = await shop.types(shop.inventory, "sku-cc")
        return effects["ReservationReleased"] + effects["ReservationCommitted"] >= 1

    await eventually(settled, what="the reservation released or committed")
    await asyncio.sleep(0.5)
    effects = await shop.types(shop.inventory, "sku-cc")
    assert (effects["ReservationCommitted"], effects["ReservationReleased"]) == (0, 1)
    assert (await shop.workflow("o-cc")).status is WorkflowStatus.CANCELLED
