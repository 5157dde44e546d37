"""The scenarios of the fulfilment workflow and its aggregates (built on chaos/scenarios.py):

   17 the process manager SIGKILLed repeatedly during N fulfilment workflows: stock seeded
      (one SKU short), orders created with 1-3 lines and confirmed at a steady rate, the
      harness playing the payment provider (most authorized, some declined, a few left
      unanswered, which time out). Every confirmed order must end fulfilled or cancelled,
      no effect doubled (the process manager's derived commands included), the books right.
   18 competing inventory workers (3 processes, one SIGKILLed repeatedly) reserving,
      committing and releasing the same few SKUs for many orders, with stock arriving
      meanwhile: no SKU oversold, on hand = received - committed, one reservation per
      order and SKU.

Both end with the standard checker (chaos/checker.py) and the fulfilment checker
(chaos/workflows.py) over the event store.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chaos.checker import Verdict, check, settle
from chaos.environment import Environment, eventually
from chaos.load import Command, LoadGenerator, LoadRecord, OutcomeCollector, Outgoing
from chaos.provider import PaymentProvider, mostly_authorize
from chaos.scenarios import (
    COMMAND_QUEUE,
    Scenario,
    Sizes,
    _keep_logs_on_failure,
    _note_unbounded_consumers,
    apply_setup,
    kill_repeatedly,
    start_workers,
)
from chaos.workflows import FulfilmentVerdict, check_fulfilment
from conveyor.aggregates import AGGREGATES
from conveyor.eventstore.port import RecordedEvent
from conveyor.eventstore.sqlite import SqliteEventStore

INVENTORY_QUEUE = AGGREGATES.named("inventory").command_queue
WORKFLOW_MARGIN = 120.0
"""Seconds past the timeout a workflow may take to end after the load (kills, backlog)."""
FULFILMENT_SKUS = ("BOOK", "LAMP", "MUG", "DESK", "PEN")
SHORT_SKU = "DESK"
"""Seeded at half of what the orders ask for: some reservations are refused."""


def _command(type_: str, **fields: Any) -> Command:
    return {"type": type_, "command_id": str(uuid.uuid4()), **fields}


async def answered(
    load: LoadGenerator, outcomes: OutcomeCollector, commands: list[Command]
) -> None:
    """Publish `commands` and wait for every one's outcome (accepted: its events are
    stored): the orders' items must not overtake their creation. Lighter than
    `apply_setup`, which also waits for every queue to be quiet."""
    record = await load.publish([Outgoing.command(c) for c in commands])
    if record.failed:
        raise RuntimeError(f"setup commands not confirmed: {record.failed}")
    await eventually(
        lambda: record.confirmed <= outcomes.settled(),
        within=120,
        interval=0.05,
        what="the setup commands' outcomes",
    )
    rejected = record.confirmed & outcomes.rejected()
    if rejected:
        raise RuntimeError(f"setup commands rejected: {sorted(rejected)[:3]}")


async def stored_events(env: Environment) -> list[RecordedEvent]:
    store = await SqliteEventStore(env.event_store).open()
    events: list[RecordedEvent] = []
    try:
        position = 0
        while page := await store.read_all(after=position, limit=5000):
            events += page
            position = page[-1].position
    finally:
        await store.close()
    return events


async def fulfilment_of(env: Environment) -> FulfilmentVerdict:
    return check_fulfilment(await stored_events(env))


class Phases:
    """Seconds from the scenario's start at which each phase ended (where the time went)."""

    def __init__(self, verdict: Verdict) -> None:
        self._started = time.monotonic()
        self._phases: dict[str, float] = verdict.figures.setdefault("phases_ended_at_s", {})

    def done(self, phase: str) -> None:
        self._phases[phase] = round(time.monotonic() - self._started, 1)


def _add_fulfilment(verdict: Verdict, fulfilment: FulfilmentVerdict) -> None:
    verdict.figures["fulfilment"] = fulfilment.as_json()
    if fulfilment.problems:
        found = {k: v for k, v in fulfilment.as_json().items() if isinstance(v, list) and v}
        verdict.problems.append(f"{fulfilment.problems} fulfilment problems: {found}")


# -- 17: the process manager SIGKILLed during the workflows ------------------------------------


@dataclass
class Orders:
    creates: list[Command] = field(default_factory=list)
    items: list[Command] = field(default_factory=list)
    confirms: list[Command] = field(default_factory=list)
    demand: Counter[str] = field(default_factory=Counter)

    @property
    def lines(self) -> int:
        return len(self.items)


def fulfilment_orders(count: int, *, prefix: str, seed: int = 17) -> Orders:
    """`count` orders of 1-3 lines (distinct SKUs, 1-3 units each)."""
    rng = random.Random(seed)
    orders = Orders()
    for n in range(count):
        order_id = f"{prefix}-{n}"
        orders.creates.append(
            _command("CreateOrder", order_id=order_id, customer_id=f"cust-{n % 50}")
        )
        for sku in rng.sample(FULFILMENT_SKUS, rng.randint(1, 3)):
            quantity = rng.randint(1, 3)
            orders.demand[sku] += quantity
            orders.items.append(
                _command(
                    "AddItem",
                    order_id=order_id,
                    sku=sku,
                    quantity=quantity,
                    unit_price=f"{rng.randint(100, 9999) / 100:.2f}",
                )
            )
        orders.confirms.append(_command("ConfirmOrder", order_id=order_id))
    return orders


def stock_for(demand: Counter[str]) -> list[Command]:
    return [
        _command(
            "ReceiveStock",
            sku=sku,
            quantity=max(1, demand[sku] // 2) if sku == SHORT_SKU else demand[sku] * 2,
        )
        for sku in FULFILMENT_SKUS
    ]


async def workflows_end(
    env: Environment, confirmed: int, *, within: float
) -> tuple[FulfilmentVerdict, float]:
    """Poll the event store until `confirmed` orders are confirmed and every one has ended
    (fulfilled or cancelled); the last verdict and the seconds it took."""
    started = time.monotonic()
    while True:
        fulfilment = await fulfilment_of(env)
        done = fulfilment.confirmed >= confirmed and not fulfilment.unfinished
        if done or time.monotonic() - started > within:
            return fulfilment, time.monotonic() - started
        await asyncio.sleep(1.0)


async def scenario_17(sizes: Sizes) -> Verdict:
    count = sizes.workflows
    verdict = Verdict(17, f"SIGKILL the process manager during {count} fulfilment workflows")
    started = time.monotonic()
    orders = fulfilment_orders(count, prefix="s17")
    phases = Phases(verdict)
    timeout = sizes.workflow_timeout
    env_overrides = {"CONVEYOR_FULFILMENT_TIMEOUT": str(timeout)}
    async with Environment("s17", env=env_overrides) as env:
        try:
            await start_workers(
                env, "commands", "commands", "gateway", "projections", "process-manager"
            )
            phases.done("workers started")
            async with (
                OutcomeCollector(env.amqp_url) as outcomes,
                PaymentProvider(env.amqp_url, mostly_authorize()) as provider,
                LoadGenerator(env.amqp_url, INVENTORY_QUEUE) as stock,
                # A steady stream of confirmations (~60 s at full size, below what the
                # workers manage on 2 busy cores), so that every kill lands among workflows
                # in every stage.
                LoadGenerator(env.amqp_url, COMMAND_QUEUE, rate=max(10.0, count / 60)) as load,
            ):
                await asyncio.gather(
                    answered(stock, outcomes, stock_for(orders.demand)),
                    answered(load, outcomes, orders.creates),
                )
                await answered(load, outcomes, orders.items)
                phases.done("stock seeded, orders created")
                baseline = outcomes.received
                # Outcomes the workflows produce at least: each confirmation, one reservation
                # per line, and one fulfilment or cancellation per order.
                total = 2 * count + orders.lines
                _, moments = await asyncio.gather(
                    load.publish([Outgoing.command(c) for c in orders.confirms]),
                    kill_repeatedly(
                        env,
                        outcomes,
                        "process-manager",
                        total=total,
                        kills=sizes.kills,
                        baseline=baseline,
                        keep=1,
                    ),
                )
                phases.done("confirmations sent")
                verdict.faults = (
                    f"{len(moments)} SIGKILL of the process manager at {', '.join(moments)} "
                    f"workflow outcomes; fulfilment timeout {timeout:g}s"
                )
                fulfilment, waited = await workflows_end(
                    env, count, within=timeout + WORKFLOW_MARGIN
                )
                verdict.figures["workflows_ended_after_load_seconds"] = round(waited, 1)
                record = LoadRecord()
                for part in (stock.record, load.record, provider.record):
                    record.merge(part)
                phases.done("workflows ended")
                await check(verdict, env, record, outcomes, settle_within=180.0)
                phases.done("checked")
                # again after settling: the derived commands are all applied now
                fulfilment = await fulfilment_of(env)
                _add_fulfilment(verdict, fulfilment)
                if fulfilment.confirmed != count:
                    verdict.problems.append(
                        f"{fulfilment.confirmed} orders confirmed of the {count} sent"
                    )
                verdict.figures["payment_provider"] = dict(provider.answers)
                replayed = sum(w.log_text().count("applied before; its") for w in env.processes)
                verdict.notes.append(
                    f"workflows: {fulfilment.fulfilled} fulfilled, {fulfilment.cancelled} "
                    f"cancelled {dict(fulfilment.cancel_reasons)}; {replayed} inputs found "
                    "applied before (redelivered after a kill) and their commands re-sent"
                )
                await _note_unbounded_consumers(env, verdict)
        finally:
            verdict.seconds = time.monotonic() - started
            _keep_logs_on_failure(env, verdict)
    return verdict


# -- 18: competing inventory workers ----------------------------------------------------------

INVENTORY_SKUS = ("S18-A", "S18-B", "S18-C", "S18-D")


@dataclass
class InventoryLoad:
    receive: list[Command]
    reserve: list[Command]
    """Reservations for many orders on a few SKUs, with more stock arriving among them."""
    settle: list[Command]
    """A commit or a release of every reservation asked for (a refused one: rejected),
    and more reservations and stock."""


def inventory_load(orders: int, *, seed: int = 18) -> InventoryLoad:
    rng = random.Random(seed)
    pairs = [
        (f"s18-order-{n}", sku)
        for n in range(orders)
        for sku in rng.sample(INVENTORY_SKUS, rng.randint(1, 2))
    ]
    demand_per_sku = 3 * len(pairs) // len(INVENTORY_SKUS)

    def reserve(order_id: str, sku: str) -> Command:
        return _command("ReserveStock", sku=sku, order_id=order_id, quantity=rng.randint(1, 5))

    def receive(quantity: int) -> Command:
        return _command("ReceiveStock", sku=rng.choice(INVENTORY_SKUS), quantity=quantity)

    # about half the demand up front, more arriving during the load: many refusals
    initial = [
        _command("ReceiveStock", sku=sku, quantity=max(5, demand_per_sku // 3))
        for sku in INVENTORY_SKUS
    ]
    first, later = pairs[: len(pairs) * 2 // 3], pairs[len(pairs) * 2 // 3 :]
    reserves = [reserve(o, s) for o, s in first]
    for index in range(0, len(reserves), 25):
        reserves.insert(index, receive(rng.randint(2, 8)))
    settling: list[Command] = []
    for order_id, sku in first:
        kind = "CommitReservation" if rng.random() < 0.6 else "ReleaseReservation"
        settling.append(_command(kind, sku=sku, order_id=order_id))
    settling += [reserve(o, s) for o, s in later]
    settling += [receive(rng.randint(2, 8)) for _ in range(len(later) // 25 + 1)]
    rng.shuffle(settling)
    return InventoryLoad(initial, reserves, settling)


async def scenario_18(sizes: Sizes) -> Verdict:
    orders = sizes.scaled(0.12, floor=60)
    verdict = Verdict(18, f"3 competing inventory workers, {orders} orders on 4 SKUs")
    started = time.monotonic()
    work = inventory_load(orders)
    phases = Phases(verdict)
    async with Environment("s18") as env:
        try:
            await start_workers(env, "commands", "commands", "commands", "gateway", "projections")
            phases.done("workers started")
            async with (
                OutcomeCollector(env.amqp_url) as outcomes,
                LoadGenerator(env.amqp_url, INVENTORY_QUEUE) as load,
            ):
                await apply_setup(env, load, outcomes, work.receive)
                baseline = outcomes.received

                async def two_phases() -> None:
                    first = await load.publish([Outgoing.command(c) for c in work.reserve])
                    await settle(env, outcomes, first.confirmed, within=120)
                    phases.done("reservations applied")
                    await load.publish([Outgoing.command(c) for c in work.settle])

                _, moments = await asyncio.gather(
                    two_phases(),
                    kill_repeatedly(
                        env,
                        outcomes,
                        "commands",
                        total=len(work.reserve) + len(work.settle),
                        kills=sizes.kills,
                        baseline=baseline,
                        keep=3,
                    ),
                )
                verdict.faults = (
                    f"{len(moments)} SIGKILL of a command worker (3 competing) at "
                    f"{', '.join(moments)} commands"
                )
                phases.done("load sent")
                await check(verdict, env, load.record, outcomes)
                phases.done("checked")
                events = await stored_events(env)
                fulfilment = check_fulfilment(events)
                _add_fulfilment(verdict, fulfilment)
                verdict.figures["inventory"] = _books(events)
                verdict.figures["rejected_by_rule"] = dict(
                    Counter(outcomes.rules.values()).most_common()
                )
                conflicts = sum(w.log_text().count("failed on attempt") for w in env.processes)
                verdict.notes.append(f"{conflicts} deliveries went round the retry ladder")
                await _note_unbounded_consumers(env, verdict)
        finally:
            verdict.seconds = time.monotonic() - started
            _keep_logs_on_failure(env, verdict)
    return verdict


def _books(events: list[RecordedEvent]) -> dict[str, dict[str, int]]:
    """Per SKU, from the raw events: received, committed, on hand, reserved, refused."""
    inventory = AGGREGATES.named("inventory")
    books: dict[str, Counter[str]] = {}
    for event in events:
        if not inventory.owns(event.stream_id):
            continue
        sku = inventory.aggregate_id_of(event.stream_id)
        counts = books.setdefault(sku, Counter())
        quantity = int(event.data.get("quantity", 0) or 0)
        match event.type:
            case "StockReceived":
                counts["received"] += quantity
            case "StockReserved":
                counts["reservations"] += 1
            case "ReservationCommitted":
                counts["committed"] += quantity
            case "ReservationReleased":
                counts["released"] += 1
            case "ReservationRefused":
                counts["refused"] += 1
    for counts in books.values():
        counts["on_hand"] = counts["received"] - counts["committed"]
    return {sku: dict(counts) for sku, counts in sorted(books.items())}


WORKFLOW_SCENARIOS: dict[int, Scenario] = {
    s.number: s
    for s in (
        Scenario(17, "SIGKILL the process manager during the workflows", scenario_17),
        Scenario(18, "competing inventory workers on the same SKUs", scenario_18),
    )
}
