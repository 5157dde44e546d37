"""A rejected command can never later be accepted (issue 16, item 3), on a real SQLite store.

Acceptance and rejection of one command contend on one stream: the rejection is a marker
in the aggregate's own stream, at the version it was decided against. The marker is
bookkeeping: it never reaches the gateway, a projection, a rebuild or `conveyor history`,
and it is not an aggregate version (projections see no gap where it sits).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conveyor.aggregates import AGGREGATES
from conveyor.aggregates.orders import ORDERS
from conveyor.application.commands import CommandEnvelope, CommandHandler, CommandOutcome
from conveyor.application.history import aggregate_history
from conveyor.application.rejections import COMMAND_REJECTED
from conveyor.eventstore.port import AppendResult, NewEvent
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.operations.status import LogEntry
from conveyor.readmodels.applier import ProjectionApplier
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.projections import ORDER_PROJECTIONS
from conveyor.readmodels.rebuild import project_in_memory, rebuild_all
from conveyor.readmodels.sqlite import SqliteReadModelStore
from domain.orders.commands import AddItem, ConfirmOrder, CreateOrder
from messaging.customers import IntegrationMapper


def envelope(command: object, command_id: str) -> CommandEnvelope:
    return CommandEnvelope(command, command_id, "corr", command_id)


ADD = envelope(AddItem("o-1", "SKU", 1, Decimal("2.50")), "add-k")
CREATE = envelope(CreateOrder("o-1", "alice"), "create")


class PausedAppends:
    """An event store whose first append waits until released: a handler that has read the
    stream and decided, held between its read and its append (the race made deterministic).
    """

    def __init__(self, store: SqliteEventStore) -> None:
        self._store = store
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self._paused = False

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        if not self._paused:
            self._paused = True
            self.reached.set()
            await asyncio.wait_for(self.release.wait(), 10)
        return await self._store.append(stream_id, expected_version, events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    event_store = await SqliteEventStore(tmp_path / "events.db").open()
    yield event_store
    await event_store.close()


def statuses(*outcomes: CommandOutcome) -> set[str]:
    return {o.status for o in outcomes}


async def test_a_resent_rejected_command_stays_rejected_after_the_order_changed(
    store: SqliteEventStore,
) -> None:
    handler = CommandHandler(store, AGGREGATES)
    first = await handler.handle(ADD)
    assert first.status == "rejected"
    await handler.handle(CREATE)
    again = await handler.handle(ADD)  # a client resend: a first delivery, not flagged
    assert (again.status, again.as_message()) == ("rejected", first.as_message())
    assert [e.type for e in await store.read_stream("order-o-1")] == [
        COMMAND_REJECTED,
        "OrderCreated",
    ]


async def test_a_rejection_racing_an_acceptance_of_the_same_command_never_both_win(
    tmp_path: Path,
) -> None:
    """Copy A of AddItem K decides "rejected" against no order and is held before its
    append; meanwhile the order is created and copy B of K (same command_id) is accepted.
    Then A appends. Before the fix A's rejection went to a stream of its own and both
    outcomes stood: `rejected` and `accepted` for one command_id."""
    shared = await SqliteEventStore(tmp_path / "events.db").open()
    other = await SqliteEventStore(tmp_path / "events.db").open()  # a second process
    try:
        paused = PausedAppends(shared)
        copy_a = asyncio.create_task(CommandHandler(paused, AGGREGATES).handle(ADD))  # type: ignore[arg-type]
        await asyncio.wait_for(paused.reached.wait(), 10)  # A read version 0 and decided
        handler_b = CommandHandler(other, AGGREGATES)
        assert (await handler_b.handle(CREATE)).status == "accepted"
        outcome_b = await handler_b.handle(ADD)
        paused.release.set()
        outcome_a = await copy_a

        assert not {"rejected", "accepted"} <= statuses(outcome_a, outcome_b)
        assert statuses(outcome_a, outcome_b) == {"accepted", "duplicate"}
        stream = await other.read_stream("order-o-1")
        assert [e.type for e in stream] == ["OrderCreated", "ItemAdded"]
    finally:
        await shared.close()
        await other.close()


async def test_an_acceptance_racing_a_recorded_rejection_replays_the_rejection(
    tmp_path: Path,
) -> None:
    """The other order of the same race: A's rejection lands first, then B's copy of K
    (after the order was created) is answered from it, never decided again."""
    shared = await SqliteEventStore(tmp_path / "events.db").open()
    other = await SqliteEventStore(tmp_path / "events.db").open()
    try:
        paused = PausedAppends(other)
        handler_b = CommandHandler(paused, AGGREGATES)  # type: ignore[arg-type]
        copy_b = asyncio.create_task(handler_b.handle(CREATE))  # held before its append
        await asyncio.wait_for(paused.reached.wait(), 10)
        outcome_a = await CommandHandler(shared, AGGREGATES).handle(ADD)  # marker at v0
        paused.release.set()
        assert (await copy_b).status == "accepted"  # conflicted, reloaded, appended after
        outcome_b = await handler_b.handle(ADD)
        assert statuses(outcome_a, outcome_b) == {"rejected"}
        assert outcome_b.replayed
        stream = await shared.read_stream("order-o-1")
        assert [e.type for e in stream] == [COMMAND_REJECTED, "OrderCreated"]
    finally:
        await shared.close()
        await other.close()


async def test_markers_never_reach_the_gateway_projections_rebuilds_or_history(
    tmp_path: Path, store: SqliteEventStore, caplog: pytest.LogCaptureFixture
) -> None:
    handler = CommandHandler(store, AGGREGATES)
    assert (await handler.handle(ADD)).status == "rejected"  # marker before the order
    assert (await handler.handle(CREATE)).version == 1  # the first aggregate version
    assert (await handler.handle(envelope(ConfirmOrder("o-1"), "early"))).status == "rejected"
    added = await handler.handle(envelope(AddItem("o-1", "SKU", 2, Decimal("2.50")), "add-2"))
    assert (added.status, added.version) == ("accepted", 2)
    confirmed = await handler.handle(envelope(ConfirmOrder("o-1"), "confirm"))
    assert (confirmed.status, confirmed.version) == ("accepted", 3)
    log = await store.read_all()
    assert [e.type for e in log] == [
        COMMAND_REJECTED,
        "OrderCreated",
        COMMAND_REJECTED,
        "ItemAdded",
        "OrderConfirmed",
    ]

    # the gateway: markers are passed over quietly; versions count domain events only, and
    # a mapper that never saw OrderCreated still finds the customer behind the marker
    with caplog.at_level("WARNING", logger="conveyor.gateway"):
        mapper = IntegrationMapper(store, AGGREGATES)
        public = [await mapper.integration_event(e) for e in log]
        assert mapper.skipped == 0
        late = await IntegrationMapper(store, AGGREGATES).integration_event(log[3])
    assert caplog.records == []
    published = [e for e in public if e is not None]
    assert [(e.type, e.version) for e in published] == [
        ("OrderCreated", 1),
        ("ItemAdded", 2),
        ("OrderConfirmed", 3),
    ]
    assert late is not None
    assert (late.customer_id, late.version) == ("alice", 2)
    assert [LogEntry.of(e).integration for e in log] == [False, True, False, True, True]

    # the projections: applied live with no gap, equal to a fold and to a rebuild
    read_store = await SqliteReadModelStore(tmp_path / "readmodels.db").open()
    try:
        collections = ProjectionCollections(read_store, cache_seconds=0)
        live: dict[str, dict[str, Any]] = {}
        for projection in ORDER_PROJECTIONS:
            applier = ProjectionApplier(read_store, collections, projection)
            await applier.ensure_collection()
            assert [await applier.apply(e) for e in published] == ["updated"] * 3
            active = await collections.active(projection.name)
            documents = await read_store.find(active.collection, limit=1000)
            live[projection.name] = {d.id: d.body for d in documents}
            assert live[projection.name] == await project_in_memory(projection.name, store)
        summary = live["order_summary"]["o-1"]
        assert (summary["status"], summary["version"]) == ("confirmed", 3)
        await rebuild_all(store, read_store, collections)
        for projection in ORDER_PROJECTIONS:
            active = await collections.active(projection.name)
            assert active.collection.endswith("_v2")
            documents = await read_store.find(active.collection, limit=1000)
            assert {d.id: d.body for d in documents} == live[projection.name]
    finally:
        await read_store.close()

    # history: domain events only, numbered by aggregate version
    history = await aggregate_history(store, ORDERS, "o-1")
    assert [e.type for e in history.events] == ["OrderCreated", "ItemAdded", "OrderConfirmed"]
    at_two = await aggregate_history(store, ORDERS, "o-1", as_of_version=2)
    assert [e.type for e in at_two.events] == ["OrderCreated", "ItemAdded"]
    assert at_two.state.version == 2


def test_conveyor_history_shows_no_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conveyor.cli import app

    async def seed() -> None:
        store = await SqliteEventStore(tmp_path / "events.db").open()
        try:
            handler = CommandHandler(store, AGGREGATES)
            await handler.handle(ADD)
            await handler.handle(CREATE)
        finally:
            await store.close()

    asyncio.run(seed())
    monkeypatch.setenv("CONVEYOR_EVENT_STORE", str(tmp_path / "events.db"))
    result = CliRunner().invoke(app, ["history", "o-1", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert [(e["type"], e["version"]) for e in shown["events"]] == [("OrderCreated", 1)]
    assert shown["order_id"] == "o-1"
    assert COMMAND_REJECTED not in result.stdout
