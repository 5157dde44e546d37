"""`conveyor demo`: the whole system at work, watched from the outside.

It starts the workers in this process unless some are already consuming the command
queue, then drives N orders through their life cycle — each order's commands in sequence
(the next one is published when the previous outcome arrives), many orders at once — with
a few commands that the rules reject on purpose. It waits until all three read models show
each order's last accepted version and reports throughput and command → read-model latency
(from publishing an order's last command until every read model shows it, measured by
polling the read models every few milliseconds).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from conveyor.aggregates import AGGREGATES
from conveyor.bootstrap import command_queue, open_read_store
from conveyor.gateway.relay import EVENTS, EventGateway
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.projections import PROJECTIONS
from conveyor.settings import Settings
from conveyor.tls import amqp_ssl_context
from conveyor.workflows.states import WorkflowStates
from messaging.cluster import connect_any
from messaging.topology import COMMAND_OUTCOMES_EXCHANGE
from workers.host import WorkerHost

Command = dict[str, Any]


@dataclass
class OrderScript:
    order_id: str
    customer_id: str
    commands: list[Command]
    next_index: int = 0
    final_version: int = 0
    last_sent_at: float = 0.0
    done_at: float | None = None
    visible_at: float | None = None


@dataclass
class DemoReport:
    orders: int
    outcomes: Counter[str] = field(default_factory=Counter)
    rejected_rules: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    events_stored: int = 0
    events_published: int | None = None
    read_models: dict[str, int] = field(default_factory=dict)
    started_workers: bool = False
    timed_out: int = 0
    workflows: WorkflowReport | None = None


def script_orders(count: int, seed: int = 42) -> list[OrderScript]:
    rng = random.Random(seed)
    scripts = []
    run = uuid.uuid4().hex[:6]
    for n in range(count):
        order_id = f"demo-{run}-{n}"

        def command(type_: str, order_id: str = order_id, **fields: Any) -> Command:
            return {"type": type_, "command_id": str(uuid.uuid4()), "order_id": order_id, **fields}

        customer_id = f"customer-{rng.randrange(max(count // 5, 1))}"
        commands = [command("CreateOrder", customer_id=customer_id)]
        skus = rng.sample(["BOOK", "LAMP", "MUG", "DESK", "PEN", "SOCKS"], rng.randint(1, 4))
        for sku in skus:
            price = f"{rng.randint(1, 5000) / 100:.2f}"
            commands.append(
                command("AddItem", sku=sku, quantity=rng.randint(1, 5), unit_price=price)
            )
        if len(skus) > 1 and rng.random() < 0.3:
            commands.append(command("RemoveItem", sku=skus[0]))
        if rng.random() < 0.05:  # rejected on purpose: quantity out of range
            commands.append(command("AddItem", sku="BULK", quantity=5000, unit_price="1.00"))
        ending = rng.random()
        if ending < 0.7:
            commands.append(command("ConfirmOrder"))
            if rng.random() < 0.05:  # rejected on purpose: confirmed twice
                commands.append(command("ConfirmOrder"))
        elif ending < 0.9:
            commands.append(command("CancelOrder", reason="changed my mind"))
        scripts.append(OrderScript(order_id, customer_id, commands))
    return scripts


async def _workers_running(settings: Settings) -> bool:
    connection = await connect_any(
        settings.amqp_url,
        ssl_context=amqp_ssl_context(settings),
        timeout=settings.amqp_connect_timeout,
    )
    async with connection:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(settings.command_queue, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        return bool(queue.declaration_result.consumer_count)


async def run_demo(
    settings: Settings,
    orders: int,
    *,
    in_flight: int = 200,
    give_up_after: float = 300.0,
    console: Console | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    scripts: list[OrderScript] | None = None,
    workflow_timeout: float | None = None,
) -> DemoReport:
    console = console or Console(stderr=True)
    report = DemoReport(orders=orders)
    host: WorkerHost | None = None
    already_running = await _workers_running(settings)
    if not already_running:
        host = WorkerHost(settings, ("commands", "gateway", "projections"))
        await host.start()
        report.started_workers = True
    read_store = await open_read_store(settings)
    connection = await connect_any(
        settings.amqp_url,
        ssl_context=amqp_ssl_context(settings),
        timeout=settings.amqp_connect_timeout,
    )
    try:
        if scripts is None:
            scripts = script_orders(orders)
        by_command: dict[str, OrderScript] = {}
        channel = await connection.channel(publisher_confirms=True)
        outcomes_exchange = await channel.declare_exchange(
            COMMAND_OUTCOMES_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        outcomes = await channel.declare_queue(exclusive=True)
        await outcomes.bind(outcomes_exchange, routing_key="orders.command.#")
        collections = ProjectionCollections(read_store, cache_seconds=0)
        summary = (await collections.active("order_summary")).collection
        active_orders = (await collections.active("active_orders")).collection
        customers = (await collections.active("customer_history")).collection
        head_before = await _event_count(host)

        pending = list(reversed(scripts))
        confirmed: list[str] = []
        active: dict[str, OrderScript] = {}
        waiting_visible: dict[str, OrderScript] = {}
        finished = asyncio.Event()
        done = 0

        async def send_next(script: OrderScript) -> None:
            command = script.commands[script.next_index]
            by_command[command["command_id"]] = script
            script.last_sent_at = time.monotonic()
            await channel.default_exchange.publish(
                aio_pika.Message(
                    json.dumps(command).encode(),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=settings.command_queue,
            )

        async def top_up() -> None:
            while pending and len(active) < in_flight:
                script = pending.pop()
                active[script.order_id] = script
                await send_next(script)

        async def on_outcome(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal done
            async with message.process():
                outcome = json.loads(message.body)
                script = by_command.pop(outcome["command_id"], None)
                if script is None:
                    return
                report.outcomes[outcome["status"]] += 1
                sent = script.commands[script.next_index]
                if sent["type"] == "ConfirmOrder" and outcome["status"] == "accepted":
                    confirmed.append(script.order_id)
                if outcome["status"] == "rejected":
                    report.rejected_rules[outcome.get("rule", "?")] += 1
                else:
                    script.final_version = max(script.final_version, outcome["version"])
                script.next_index += 1
                if script.next_index < len(script.commands):
                    await send_next(script)
                    return
                script.done_at = script.last_sent_at
                del active[script.order_id]
                waiting_visible[script.order_id] = script
                done += 1
                await top_up()

        async def watch_read_model() -> None:
            while not finished.is_set():
                if waiting_visible:
                    ids = list(waiting_visible)[:1000]
                    summaries = await read_store.get_many(summary, ids)
                    actives = await read_store.get_many(active_orders, ids)
                    histories = await read_store.get_many(customers, ids)
                    now = time.monotonic()
                    for order_id in ids:
                        script = waiting_visible[order_id]
                        if caught_up(script, summaries, actives, histories):
                            script.visible_at = now
                            del waiting_visible[order_id]
                    if on_progress:
                        on_progress(
                            done, orders - len(waiting_visible) - len(active) - len(pending)
                        )
                if not pending and not active and not waiting_visible:
                    finished.set()
                    return
                await asyncio.sleep(0.005)

        started = time.monotonic()
        await outcomes.consume(on_outcome)
        watcher = asyncio.create_task(watch_read_model())
        await top_up()
        try:
            await asyncio.wait_for(finished.wait(), give_up_after)
        except TimeoutError:
            report.timed_out = len(active) + len(waiting_visible) + len(pending)
        watcher.cancel()
        report.seconds = time.monotonic() - started
        report.latencies_ms = [
            (s.visible_at - s.done_at) * 1000
            for s in scripts
            if s.visible_at is not None and s.done_at is not None
        ]
        head = await _event_count(host)
        report.events_stored = head - head_before if host else 0
        if host is not None and host.gateway is not None:
            # The read models can show an event before the relay has counted its page
            # (it counts after the checkpoint is saved): wait for it to reach the head.
            await _relayed_up_to(host.gateway, head, within=10)
            report.events_published = host.gateway.published
        for projection in PROJECTIONS:
            collection = (await collections.active(projection.name)).collection
            report.read_models[projection.name] = await read_store.count(collection)
        if host is not None and host.store is not None:
            # A short workflow timeout, so that the payments the demo leaves unanswered
            # end — but long enough for the whole backlog to be worked through first.
            timeout = workflow_timeout or max(5.0, len(confirmed) / 20)
            report.workflows = await run_workflows(
                settings.model_copy(update={"fulfilment_timeout": timeout}),
                confirmed,
                channel,
                host.store,
                read_store,
                start_process_manager=True,
                give_up_after=give_up_after,
                console=console,
            )
        return report
    finally:
        await connection.close()
        await read_store.close()
        if host is not None:
            await host.stop()


def caught_up(
    script: OrderScript,
    summaries: dict[str, Any],
    actives: dict[str, Any],
    histories: dict[str, Any],
) -> bool:
    """All three read models show the order's last accepted version."""
    wanted = script.final_version
    summary = summaries.get(script.order_id)
    active = actives.get(script.order_id)
    history = histories.get(script.order_id)  # customer_history: one document per order
    if summary is None or active is None or history is None:
        return False
    versions: list[int] = [d.body["version"] for d in (summary, active, history)]
    return min(versions) >= wanted


async def _relayed_up_to(gateway: EventGateway, position: int, *, within: float) -> None:
    poll = 0.01
    for _ in range(int(within / poll)):
        if gateway.relayed_position >= position:
            return
        await asyncio.sleep(poll)


async def _event_count(host: WorkerHost | None) -> int:
    if host is None or host.store is None:
        return 0
    return await host.store.head_position()


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


def print_report(report: DemoReport, console: Console) -> None:
    commands = sum(report.outcomes.values())
    table = Table(title=f"conveyor demo: {report.orders} orders", show_header=False)
    table.add_row(
        "workers", "started in this process" if report.started_workers else "already running"
    )
    table.add_row(
        "commands",
        f"{commands} ({report.outcomes['accepted']} accepted, {report.outcomes['rejected']} "
        f"rejected, {report.outcomes['duplicate']} duplicate)",
    )
    if report.rejected_rules:
        table.add_row(
            "rejected by rule", ", ".join(f"{k}: {v}" for k, v in report.rejected_rules.items())
        )
    if report.started_workers:
        table.add_row(
            "events stored",
            f"{report.events_stored} (incl. {report.outcomes['rejected']} rejection records)",
        )
        table.add_row("events published", str(report.events_published))
    table.add_row(
        "read models", ", ".join(f"{name}: {count}" for name, count in report.read_models.items())
    )
    rate = commands / report.seconds if report.seconds else 0
    table.add_row("throughput", f"{rate:,.0f} commands/s over {report.seconds:.1f}s")
    lat = report.latencies_ms
    table.add_row(
        "command → read model",
        f"p50 {percentile(lat, 0.5):.1f} ms, p95 {percentile(lat, 0.95):.1f} ms, "
        f"p99 {percentile(lat, 0.99):.1f} ms ({len(lat)} orders)",
    )
    if report.timed_out:
        table.add_row("[red]timed out", f"{report.timed_out} orders did not finish")
    console.print(table)
    if report.workflows is not None:
        print_workflow_report(report.workflows, console)


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


# --- the fulfilment workflows -------------------------------------------------------------

DEMO_SKUS = ("BOOK", "LAMP", "MUG", "DESK", "PEN", "SOCKS")
SCARCE_SKU = "DESK"
"""Seeded short, so that some workflows meet a refused reservation."""


@dataclass
class WorkflowReport:
    confirmed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    """fulfilled, and cancelled by reason (its kind: stock, payment declined, timed out)."""
    payments: Counter[str] = field(default_factory=Counter)
    """What the demo's payment provider did: authorized, declined, left unanswered."""
    stock_before: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    stock_after: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    """SKU → (on hand, reserved, available)."""
    seconds: float = 0.0
    """From the process manager's start until the last workflow the provider answered
    (or whose stock was refused) ended: the unanswered ones wait for their timeout."""
    answered_finished: int = 0
    timeout_seconds: float = 0.0
    unfinished: int = 0
    events_stored: int = 0
    """Every event this phase stored: stock, reservations, payments, order fulfilments and
    cancellations, and the workflows' own (never published)."""


def payment_answer(order_id: str) -> str:
    """The demo provider's answer, stable per order: most authorized, some declined, a few
    never answered (they time out)."""
    roll = random.Random(order_id).random()
    return "authorize" if roll < 0.8 else "decline" if roll < 0.92 else "none"


def stock_to_seed(orders: int) -> dict[str, int]:
    return {sku: max(orders // 2, 2) if sku == SCARCE_SKU else orders * 3 for sku in DEMO_SKUS}


def _cancel_kind(reason: str | None) -> str:
    reason = reason or ""
    for prefix in ("stock unavailable", "payment declined", "timed out"):
        if reason.startswith(prefix):
            return f"cancelled: {prefix}"
    return f"cancelled: {reason}"


async def _stock(store: Any, skus: tuple[str, ...]) -> dict[str, tuple[int, int, int]]:
    inventory = AGGREGATES.named("inventory")
    levels = {}
    for sku in skus:
        state = inventory.fold(sku, await store.read_stream(inventory.stream(sku)))
        levels[sku] = (state.on_hand, state.reserved, state.available)
    return levels


async def run_workflows(
    settings: Settings,
    confirmed: list[str],
    channel: aio_pika.abc.AbstractChannel,
    store: Any,
    read_store: Any,
    *,
    start_process_manager: bool,
    give_up_after: float,
    console: Console,
) -> WorkflowReport:
    """Play the payment provider for the workflows the confirmed orders started, and wait
    until each has ended. With `start_process_manager` the stock is seeded and the process
    manager started here, after the orders phase (the confirmations waited in its queue)."""
    report = WorkflowReport(confirmed=len(confirmed), timeout_seconds=settings.fulfilment_timeout)
    payments_queue = command_queue(settings, AGGREGATES.named("payment")).name
    inventory_queue = command_queue(settings, AGGREGATES.named("inventory")).name

    async def send(queue: str, command: Command) -> None:
        await channel.default_exchange.publish(
            aio_pika.Message(
                json.dumps(command).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=command["command_id"],
            ),
            routing_key=queue,
        )

    head_before = await store.head_position()
    report.stock_before = await _stock(store, DEMO_SKUS)
    seed = stock_to_seed(report.confirmed)
    if start_process_manager:
        for sku, quantity in seed.items():
            await send(
                inventory_queue,
                {
                    "type": "ReceiveStock",
                    "command_id": str(uuid.uuid4()),
                    "sku": sku,
                    "quantity": quantity,
                },
            )
        wanted = {sku: before[0] + seed[sku] for sku, before in report.stock_before.items()}
        for _ in range(1000):
            levels = await _stock(store, DEMO_SKUS)
            if all(levels[sku][0] >= wanted[sku] for sku in DEMO_SKUS):
                break
            await asyncio.sleep(0.01)
        report.stock_before = await _stock(store, DEMO_SKUS)

    events = await channel.declare_exchange(EVENTS.name, aio_pika.ExchangeType.TOPIC, durable=True)
    requests = await channel.declare_queue(exclusive=True)
    await requests.bind(
        events, routing_key=AGGREGATES.named("payment").contract.routing_keys["PaymentRequested"]
    )
    mine = set(confirmed)

    async def on_request(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            event = json.loads(message.body)
            order_id = event.get("aggregate_id")
            if order_id not in mine:
                return
            answer = payment_answer(order_id)
            report.payments[answer] += 1
            if answer == "authorize":
                await send(
                    payments_queue,
                    {
                        "type": "AuthorizePayment",
                        "command_id": f"demo-authorize-{order_id}",
                        "order_id": order_id,
                        "amount": event["data"]["amount"],
                        "provider_reference": f"demo-psp-{order_id}",
                    },
                )
            elif answer == "decline":
                await send(
                    payments_queue,
                    {
                        "type": "DeclinePayment",
                        "command_id": f"demo-decline-{order_id}",
                        "order_id": order_id,
                        "reason": "insufficient funds",
                    },
                )

    await requests.consume(on_request)
    pm: WorkerHost | None = None
    started = time.monotonic()
    if start_process_manager:
        # Its own health port: the workers' host holds the configured one.
        pm = WorkerHost(settings.model_copy(update={"ops_port": 0}), ("process-manager",))
        await pm.start()
    states = WorkflowStates(read_store)
    ended_at: dict[str, float] = {}
    timed_out: set[str] = set()
    try:
        deadline = started + give_up_after
        while len(ended_at) < len(confirmed) and time.monotonic() < deadline:
            waiting = [order for order in confirmed if order not in ended_at][:1000]
            for order_id in waiting:
                summary = await states.get(order_id)
                if summary is not None and summary.status in ("fulfilled", "cancelled"):
                    ended_at[order_id] = time.monotonic()
                    kind = (
                        "fulfilled"
                        if summary.status == "fulfilled"
                        else _cancel_kind(summary.cancel_reason)
                    )
                    report.outcomes[kind] += 1
                    if kind == "cancelled: timed out":
                        timed_out.add(order_id)
            await asyncio.sleep(0.02)
        answered = [t for order, t in ended_at.items() if order not in timed_out]
        report.answered_finished = len(answered)
        report.seconds = (max(answered) - started) if answered else 0.0
        report.unfinished = len(confirmed) - len(ended_at)
        # A workflow has ended once its commits and releases are sent: wait for the
        # inventory to have applied them.
        for _ in range(3000):
            report.stock_after = await _stock(store, DEMO_SKUS)
            if not any(reserved for _, reserved, _ in report.stock_after.values()):
                break
            await asyncio.sleep(0.01)
        report.events_stored = await store.head_position() - head_before
        return report
    finally:
        if pm is not None:
            await pm.stop()


def print_workflow_report(report: WorkflowReport, console: Console) -> None:
    table = Table(
        title=f"fulfilment workflows: {report.confirmed} confirmed orders", show_header=False
    )
    table.add_row(
        "payment provider",
        ", ".join(f"{k}: {v}" for k, v in sorted(report.payments.items())) or "-",
    )
    for outcome, count in sorted(report.outcomes.items()):
        table.add_row(outcome, str(count))
    rate = report.answered_finished / report.seconds if report.seconds else 0
    table.add_row(
        "workflow throughput",
        f"{rate:,.1f} workflows/s ({report.answered_finished} answered workflows ended in "
        f"{report.seconds:.1f}s; the unanswered wait {report.timeout_seconds:g}s for their "
        "timeout)",
    )
    if report.unfinished:
        table.add_row("[red]unfinished", f"{report.unfinished} workflows did not end")
    console.print(table)
    stock = Table(title="stock (on hand / reserved / available)")
    for column in ("sku", "before", "after"):
        stock.add_column(column)
    for sku, before in report.stock_before.items():
        after = report.stock_after.get(sku, (0, 0, 0))
        stock.add_row(sku, " / ".join(map(str, before)), " / ".join(map(str, after)))
    console.print(stock)
