"""The command handler on the in-memory store: outcomes, idempotency, conflicts."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from conveyor.aggregates import AGGREGATES
from conveyor.aggregates.orders import ORDERS
from conveyor.application.commands import CommandEnvelope, CommandHandler, event_id_for
from conveyor.application.history import aggregate_history
from conveyor.application.rejections import COMMAND_REJECTED, rejection_of, rejection_stream
from conveyor.eventstore.memory import InMemoryEventStore
from conveyor.eventstore.port import AppendResult, ConcurrencyError, NewEvent
from domain.orders.commands import AddItem, CancelOrder, ConfirmOrder, CreateOrder

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def envelope(command: object, command_id: str, correlation_id: str = "corr") -> CommandEnvelope:
    return CommandEnvelope(command, command_id, correlation_id, command_id)  # type: ignore[arg-type]


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore()


@pytest.fixture
def handler(store: InMemoryEventStore) -> CommandHandler:
    return CommandHandler(store, AGGREGATES, clock=lambda: NOW)


async def test_accepted_command_appends_events_with_metadata_and_derived_ids(
    store: InMemoryEventStore, handler: CommandHandler
) -> None:
    outcome = await handler.handle(envelope(CreateOrder("o-1", "c-1"), "cmd-1", "corr-9"))
    assert (outcome.status, outcome.version) == ("accepted", 1)
    [stored] = await store.read_stream("order-o-1")
    assert stored.event_id == event_id_for("order-o-1", "cmd-1", 0)
    assert stored.type == "OrderCreated"
    assert stored.data == {"customer_id": "c-1"}
    assert stored.occurred_at == NOW
    assert stored.metadata == {
        "command_id": "cmd-1",
        "correlation_id": "corr-9",
        "causation_id": "cmd-1",
    }
    assert outcome.event_ids == (stored.event_id,)


async def test_a_repeated_command_id_is_a_duplicate_with_the_original_version(
    store: InMemoryEventStore, handler: CommandHandler
) -> None:
    await handler.handle(envelope(CreateOrder("o-1", "c-1"), "create"))
    add = envelope(AddItem("o-1", "SKU", 1, Decimal("1.00")), "add")
    first = await handler.handle(add)
    await handler.handle(envelope(AddItem("o-1", "SKU-2", 1, Decimal("1.00")), "add-2"))
    again = await handler.handle(add)
    assert first.status == "accepted"
    assert (again.status, again.version) == ("duplicate", first.version)
    assert again.event_ids == first.event_ids
    assert len(await store.read_stream("order-o-1")) == 3


async def test_a_rejection_appends_only_its_marker_and_names_the_rule(
    store: InMemoryEventStore, handler: CommandHandler
) -> None:
    outcome = await handler.handle(envelope(ConfirmOrder("nope"), "c"))
    assert outcome.status == "rejected"
    assert outcome.rule == "order_not_found"
    assert "nope" in (outcome.reason or "")
    assert outcome.as_message()["rule"] == "order_not_found"
    assert [e.type for e in await store.read_stream("order-nope")] == [COMMAND_REJECTED]
    assert (await aggregate_history(store, ORDERS, "nope")).events == []


class LoadBarrierStore(InMemoryEventStore):
    """Lets every concurrent handler load before any of them appends: the worst race."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = asyncio.Barrier(parties)
        self.racing = False

    async def read_stream(self, stream_id: str, **kwargs: object) -> list:  # type: ignore[override]
        events = await super().read_stream(stream_id, **kwargs)  # type: ignore[arg-type]
        if self.racing:
            await asyncio.wait_for(self.barrier.wait(), 5)
            self.racing = False  # only the first loads race; reloads after a conflict don't
        return events


async def test_one_command_delivered_to_two_workers_at_once_applies_once() -> None:
    store = LoadBarrierStore(parties=2)
    workers = [
        CommandHandler(store, AGGREGATES),
        CommandHandler(store, AGGREGATES),
    ]  # two processes' handlers
    await workers[0].handle(envelope(CreateOrder("o-1", "c"), "create"))
    store.racing = True
    add = envelope(AddItem("o-1", "SKU", 1, Decimal("2.00")), "add-once")
    outcomes = await asyncio.gather(*(w.handle(add) for w in workers))
    assert sorted(o.status for o in outcomes) == ["accepted", "duplicate"]
    assert len(await store.read_stream("order-o-1")) == 2


async def test_different_commands_racing_on_one_order_are_all_applied() -> None:
    store = LoadBarrierStore(parties=2)
    workers = [CommandHandler(store, AGGREGATES), CommandHandler(store, AGGREGATES)]
    await workers[0].handle(envelope(CreateOrder("o-1", "c"), "create"))
    store.racing = True
    outcomes = await asyncio.gather(
        workers[0].handle(envelope(AddItem("o-1", "A", 1, Decimal("1")), "a")),
        workers[1].handle(envelope(AddItem("o-1", "B", 1, Decimal("1")), "b")),
    )
    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    assert sorted(o.version for o in outcomes) == [2, 3]


class AlwaysConflicting(InMemoryEventStore):
    def __init__(self) -> None:
        super().__init__()
        self.appends = 0

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        self.appends += 1
        raise ConcurrencyError(stream_id, expected_version, expected_version + 1)


async def test_conflicts_that_outlast_the_retries_escape_as_a_transient_failure() -> None:
    store = AlwaysConflicting()
    handler = CommandHandler(store, AGGREGATES, conflict_attempts=3)
    with pytest.raises(ConcurrencyError):
        await handler.handle(envelope(CreateOrder("o", "c"), "x"))
    assert store.appends == 3


async def test_history_as_of_version_and_time(
    store: InMemoryEventStore,
) -> None:
    times = iter([NOW.replace(hour=h) for h in (9, 10, 11, 12)])
    handler = CommandHandler(store, AGGREGATES, clock=lambda: next(times))
    await handler.handle(envelope(CreateOrder("o", "c"), "1"))
    await handler.handle(envelope(AddItem("o", "A", 2, Decimal("5.00")), "2"))
    await handler.handle(envelope(ConfirmOrder("o"), "3"))
    await handler.handle(envelope(CancelOrder("o", "changed mind"), "4"))

    at_two = await aggregate_history(store, ORDERS, "o", as_of_version=2)
    assert at_two.state.version == 2
    assert str(at_two.state.status) == "pending"
    assert at_two.state.total == Decimal("10.00")

    at_eleven = await aggregate_history(store, ORDERS, "o", as_of=NOW.replace(hour=11, minute=30))
    assert [e.type for e in at_eleven.events] == ["OrderCreated", "ItemAdded", "OrderConfirmed"]
    assert str(at_eleven.state.status) == "confirmed"

    now = await aggregate_history(store, ORDERS, "o")
    assert str(now.state.status) == "cancelled"
    assert (
        await aggregate_history(store, ORDERS, "o", as_of=NOW.replace(hour=8))
    ).state.exists is False


# --- durable rejections (conveyor/application/rejections.py) --------------------------------------


async def test_a_rejection_is_recorded_in_the_order_stream_before_it_is_reported(
    store: InMemoryEventStore, handler: CommandHandler
) -> None:
    add = envelope(AddItem("o-1", "SKU", 1, Decimal("1.00")), "add", "corr-7")
    outcome = await handler.handle(add)
    assert (outcome.status, outcome.rule, outcome.replayed) == (
        "rejected",
        "order_not_found",
        False,
    )
    [record] = await store.read_stream("order-o-1")
    assert (record.type, record.version) == (COMMAND_REJECTED, 1)
    # the id the command's acceptance would have had: one command, one first event
    assert record.event_id == event_id_for("order-o-1", "add", 0)
    assert record.data == {
        "command_id": "add",
        "rule": "order_not_found",
        "reason": outcome.reason,
        "aggregate_version": 0,
    }
    assert record.metadata["command_id"] == "add"
    assert record.metadata["correlation_id"] == "corr-7"
    assert await store.read_stream(rejection_stream("o-1", "add")) == []


async def test_a_redelivered_rejected_command_gets_its_original_rejection_after_the_order_changed(
    store: InMemoryEventStore, handler: CommandHandler
) -> None:
    add = envelope(AddItem("o-1", "SKU", 1, Decimal("1.00")), "add")
    first = await handler.handle(add)
    assert (first.status, first.rule) == ("rejected", "order_not_found")
    # the CreateOrder arrives; decided again now, the AddItem would be accepted
    await handler.handle(envelope(CreateOrder("o-1", "c"), "create"))

    again = await handler.handle(dataclasses.replace(add, seen_before=True))

    assert again.replayed
    assert again.as_message() == first.as_message()  # the same outcome, byte for byte
    assert [e.type for e in await store.read_stream("order-o-1")] == [
        COMMAND_REJECTED,
        "OrderCreated",
    ]
    # a different AddItem is accepted: the order really did change
    other = await handler.handle(envelope(AddItem("o-1", "SKU", 1, Decimal("1.00")), "add-2"))
    assert (other.status, other.version) == ("accepted", 2)  # markers are not versions


async def test_every_command_reads_only_its_own_rejection_record_whatever_the_order_saw(
    store: InMemoryEventStore,
) -> None:
    reads: list[str] = []
    original = store.read_stream

    async def counting(stream_id: str, **kwargs: object) -> list:  # type: ignore[type-arg]
        reads.append(stream_id)
        return await original(stream_id, **kwargs)  # type: ignore[arg-type]

    store.read_stream = counting  # type: ignore[method-assign]
    handler = CommandHandler(store, AGGREGATES)
    for n in range(5):  # rejections of this order do not make later commands read more
        await handler.handle(envelope(ConfirmOrder("o-1"), f"early-{n}"))
    reads.clear()
    await handler.handle(envelope(CreateOrder("o-1", "c"), "create"))
    await handler.handle(envelope(AddItem("o-1", "SKU", 1, Decimal("1.00")), "add"))
    assert reads == [
        "order-o-1",
        rejection_stream("o-1", "create"),
        "order-o-1",
        rejection_stream("o-1", "add"),
    ]
    reads.clear()
    await handler.handle(
        dataclasses.replace(envelope(ConfirmOrder("o-1"), "confirm"), seen_before=True)
    )
    # seen before: also where an earlier version kept all of the order's records
    assert reads == ["order-o-1", rejection_stream("o-1", "confirm"), "rejections-o-1"]


async def test_a_resent_rejected_command_is_never_accepted_later(
    store: InMemoryEventStore,
) -> None:
    """A client resends a rejected command under the same command_id as a fresh message
    (not flagged as seen before) after the order changed: still rejected, from its record."""
    handler = CommandHandler(store, AGGREGATES)
    add = envelope(AddItem("o-1", "SKU", 1, Decimal("1.00")), "add")
    first = await handler.handle(add)
    await handler.handle(envelope(CreateOrder("o-1", "c"), "create"))
    again = await handler.handle(add)  # a client resend: not flagged as seen before
    assert again.replayed
    assert again.as_message() == first.as_message()
    assert [e.type for e in await store.read_stream("order-o-1")] == [
        COMMAND_REJECTED,
        "OrderCreated",
    ]


async def test_a_command_rejected_twice_is_recorded_once(
    store: InMemoryEventStore, handler: CommandHandler
) -> None:
    confirm = envelope(ConfirmOrder("o-1"), "confirm")
    first = await handler.handle(confirm)
    again = await handler.handle(confirm)  # not flagged, still rejected: the record answers
    assert (first.replayed, again.replayed) == (False, True)
    assert again.as_message() == first.as_message()
    assert len(await store.read_stream("order-o-1")) == 1


async def test_rejections_of_one_order_racing_in_two_processes_are_all_recorded() -> None:
    store = LoadBarrierStore(parties=2)
    workers = [CommandHandler(store, AGGREGATES), CommandHandler(store, AGGREGATES)]
    store.racing = True
    outcomes = await asyncio.gather(
        workers[0].handle(envelope(ConfirmOrder("o-1"), "a")),
        workers[1].handle(envelope(CancelOrder("o-1", "why"), "b")),
    )
    assert [o.status for o in outcomes] == ["rejected", "rejected"]
    stream = await store.read_stream("order-o-1")
    for command_id in ("a", "b"):
        assert rejection_of(stream, command_id) is not None
    assert [o.version for o in outcomes] == [0, 0]  # both decided against no order


async def test_one_rejected_command_racing_in_two_processes_is_recorded_once() -> None:
    store = LoadBarrierStore(parties=2)
    workers = [CommandHandler(store, AGGREGATES), CommandHandler(store, AGGREGATES)]
    store.racing = True
    confirm = envelope(ConfirmOrder("o-1"), "confirm")
    outcomes = await asyncio.gather(*(w.handle(confirm) for w in workers))
    assert [o.as_message() for o in outcomes] == [outcomes[0].as_message()] * 2
    assert sorted(o.replayed for o in outcomes) == [False, True]
    assert len(await store.read_stream("order-o-1")) == 1


def test_the_legacy_rejection_stream_is_not_an_order_stream() -> None:
    # order ids are free-form: "order-rejections-x" would be the stream of order "rejections-x"
    assert not ORDERS.owns(rejection_stream("x", "c"))
    assert rejection_stream("x", "c") != ORDERS.stream("rejections-x/c")


async def test_rejection_records_are_skipped_quietly_by_the_gateway_and_lag(
    store: InMemoryEventStore, handler: CommandHandler, caplog: pytest.LogCaptureFixture
) -> None:
    from conveyor.operations.status import LogEntry
    from messaging.customers import IntegrationMapper

    await handler.handle(envelope(ConfirmOrder("o-1"), "confirm"))
    [record] = await store.read_all()
    assert record.stream_id == "order-o-1"
    directory = IntegrationMapper(store, AGGREGATES)
    with caplog.at_level("DEBUG", logger="conveyor.gateway"):
        assert await directory.integration_event(record) is None
    assert directory.skipped == 0
    assert caplog.records == []
    assert not LogEntry.of(record).integration  # projections are never sent it
    assert (await aggregate_history(store, ORDERS, "o-1")).events == []


async def test_rejections_of_two_orders_never_share_a_record_stream(
    store: InMemoryEventStore,
) -> None:
    """Order and command ids are free-form: order "a/b" with command "c" and order "a" with
    command "b/c" must not meet in one stream "rejections-a/b/c" (the second rejection could
    never be recorded: each append at "no stream" conflicts, until the command is
    dead-lettered without an outcome)."""
    handler = CommandHandler(store, AGGREGATES, conflict_attempts=2, clock=lambda: NOW)
    first = await handler.handle(envelope(ConfirmOrder("a/b"), "c"))
    second = await handler.handle(envelope(ConfirmOrder("a"), "b/c"))
    assert (first.status, second.status) == ("rejected", "rejected")
    assert rejection_stream("a/b", "c") != rejection_stream("a", "b/c")
