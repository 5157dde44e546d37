"""Snapshots in the command path (conveyor/application/loading.py and the handler):
load = latest snapshot + tail; writing is off the critical path and never needed; and a
command seen again is answered as before although its events are older than the snapshot."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import pytest

from conveyor.aggregates.inventory import INVENTORY, inventory_registry
from conveyor.application import loading
from conveyor.application.commands import CommandEnvelope, CommandHandler
from conveyor.eventstore.memory import InMemoryEventStore
from conveyor.eventstore.port import RecordedEvent, Snapshot
from domain.inventory.commands import ReceiveStock, ReleaseReservation, ReserveStock

STREAM = "inventory-SKU"


class SpyStore(InMemoryEventStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[int] = []  # after_version of each read of the SKU's stream
        self.save_gate: asyncio.Event | None = None
        self.save_error: Exception | None = None
        self.appends = 0

    async def append(self, stream_id: str, expected_version: int, events: Any) -> Any:
        self.appends += 1
        return await super().append(stream_id, expected_version, events)

    async def read_stream(self, stream_id: str, **options: Any) -> list[RecordedEvent]:
        if stream_id == STREAM:
            self.reads.append(options.get("after_version", 0))
        await asyncio.sleep(0)  # a real store's read yields: background writes get a turn
        return await super().read_stream(stream_id, **options)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        if self.save_gate is not None:
            await self.save_gate.wait()
        if self.save_error is not None:
            raise self.save_error
        await super().save_snapshot(snapshot)


def envelope(command: object, command_id: str, *, seen_before: bool = False) -> CommandEnvelope:
    return CommandEnvelope(
        command, command_id, command_id, command_id, seen_before=seen_before, aggregate="inventory"
    )


async def receive(handler: CommandHandler, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        outcome = await handler.handle(envelope(ReceiveStock("SKU", 1), f"r-{n}"))
        assert outcome.status == "accepted"


async def full_state(store: InMemoryEventStore) -> Any:
    return INVENTORY.fold("SKU", await store.read_stream(STREAM))


async def test_a_load_reads_the_latest_snapshot_and_only_the_tail() -> None:
    store = SpyStore()
    handler = CommandHandler(store, inventory_registry(snapshot_every=10))
    await receive(handler, 25)
    await handler.loader.drain()
    snapshot = await store.load_snapshot(STREAM)
    assert snapshot is not None
    assert snapshot.version == 20  # taken at 10, then 20; 25 - 20 < 10
    assert snapshot.schema_version == INVENTORY.snapshots.schema_version  # type: ignore[union-attr]
    store.reads.clear()
    await receive(handler, 1, start=25)
    assert store.reads == [20]
    loaded = await handler.loader.load(inventory_registry().named("inventory"), "SKU")
    assert loaded.state == await full_state(store)
    assert loaded.state.on_hand == 26
    assert loaded.aggregate_version == loaded.stream_version == 26


async def test_without_snapshots_every_load_reads_the_whole_stream() -> None:
    store = SpyStore()
    handler = CommandHandler(store, inventory_registry(snapshot_every=None))
    await receive(handler, 12)
    await handler.loader.drain()
    assert await store.load_snapshot(STREAM) is None
    assert set(store.reads) == {0}


async def test_writing_a_snapshot_is_not_on_the_commands_path() -> None:
    store = SpyStore()
    store.save_gate = asyncio.Event()  # every snapshot write hangs until released
    handler = CommandHandler(store, inventory_registry(snapshot_every=5))
    async with asyncio.timeout(5):
        await receive(handler, 30)  # commands go on while the first write hangs
    assert await store.load_snapshot(STREAM) is None
    store.save_gate.set()
    await handler.loader.drain()
    assert (await store.load_snapshot(STREAM)) is not None


async def test_a_snapshot_that_cannot_be_written_is_only_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = SpyStore()
    store.save_error = OSError("disk full")
    handler = CommandHandler(store, inventory_registry(snapshot_every=5))
    with caplog.at_level(logging.WARNING, "conveyor.snapshots"):
        await receive(handler, 12)
        await handler.loader.drain()
    assert "was not written (OSError: disk full)" in caplog.text
    assert (await full_state(store)).on_hand == 12


@pytest.mark.parametrize(
    ("damage", "warned"),
    [
        ({"state": {"sku": "SKU"}}, "is corrupt"),
        ({"aggregate_version": "many"}, "is corrupt"),
        ({"recent_command_ids": None}, "is corrupt"),
        ({"schema_version": 99}, ""),  # another shape: ignored, without alarm
    ],
    ids=["state", "version", "recent-ids", "schema-version"],
)
async def test_a_bad_snapshot_falls_back_to_the_full_fold(
    damage: dict[str, Any], warned: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = SpyStore()
    handler = CommandHandler(store, inventory_registry(snapshot_every=10))
    await receive(handler, 10)
    await handler.loader.drain()
    good = await store.load_snapshot(STREAM)
    assert good is not None
    bad = dict(good.data)
    schema_version = damage.pop("schema_version", good.schema_version)
    bad.update(damage)
    # A wrong state the tail cannot repair: the fold must not start from it.
    store._snapshots[STREAM] = replace(good, data=bad, schema_version=schema_version)
    store.reads.clear()
    with caplog.at_level(logging.INFO, "conveyor.snapshots"):
        await receive(handler, 1, start=10)
    assert store.reads == [0]
    assert warned in caplog.text
    assert (await full_state(store)).on_hand == 11


async def test_an_unreadable_snapshot_falls_back_to_the_full_fold(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = SpyStore()
    handler = CommandHandler(store, inventory_registry(snapshot_every=10))
    await receive(handler, 10)

    async def broken(stream_id: str) -> Snapshot | None:
        raise ValueError("not JSON")

    store.load_snapshot = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, "conveyor.snapshots"):
        await receive(handler, 1, start=10)
    assert "could not be read (ValueError: not JSON)" in caplog.text


@pytest.mark.parametrize("seen_before", [True, False], ids=["redelivered", "client-resend"])
async def test_a_command_older_than_the_snapshot_seen_again_is_answered_as_before(
    seen_before: bool,
) -> None:
    store = SpyStore()
    handler = CommandHandler(store, inventory_registry(snapshot_every=10))
    reserve = await handler.handle(envelope(ReceiveStock("SKU", 5), "first"))
    assert reserve.status == "accepted"
    reserved = await handler.handle(envelope(ReserveStock("SKU", "o-1", 5), "reserve-o-1"))
    # A second reservation for one order and SKU breaks a rule (a shortage is a fact,
    # ReservationRefused, since the fulfilment workflow learns it from an event).
    refused = await handler.handle(envelope(ReserveStock("SKU", "o-1", 1), "reserve-o-1-again"))
    assert refused.status == "rejected"
    released = await handler.handle(envelope(ReleaseReservation("SKU", "o-1"), "release-o-1"))
    assert released.status == "accepted"
    await receive(handler, 30)
    await handler.loader.drain()
    snapshot = await store.load_snapshot(STREAM)
    assert snapshot is not None
    assert snapshot.version > released.version + 1  # all four are older than the snapshot
    length = len(await store.read_stream(STREAM))
    store.reads.clear()
    appends = store.appends

    # Decided again on today's state, each would now go the other way (o-1 holds nothing,
    # 35 units are free): the original outcomes are what must come back.
    again = await handler.handle(
        envelope(ReserveStock("SKU", "o-1", 5), "reserve-o-1", seen_before=seen_before)
    )
    assert (again.status, again.version, again.event_ids) == (
        "duplicate",
        reserved.version,
        reserved.event_ids,
    )
    again = await handler.handle(
        envelope(ReserveStock("SKU", "o-1", 1), "reserve-o-1-again", seen_before=seen_before)
    )
    assert (again.status, again.rule, again.version) == ("rejected", refused.rule, refused.version)
    assert again.replayed
    again = await handler.handle(
        envelope(ReleaseReservation("SKU", "o-1"), "release-o-1", seen_before=seen_before)
    )
    assert (again.status, again.version) == ("duplicate", released.version)
    reads = list(store.reads)
    assert len(await store.read_stream(STREAM)) == length  # nothing appended
    # Found before deciding — not by a duplicate event id at append time, which KurrentDB
    # would not refuse at a new version: no append was even tried.
    assert store.appends == appends
    # the redelivery reads the whole stream; the resend finds its id in the snapshot first
    assert reads == ([0] * 3 if seen_before else [snapshot.version, 0] * 3)


async def test_the_snapshot_keeps_the_most_recent_command_ids_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loading, "RECENT_COMMANDS", 20)
    store = SpyStore()
    handler = CommandHandler(store, inventory_registry(snapshot_every=30))
    await receive(handler, 40)
    await handler.loader.drain()
    snapshot = await store.load_snapshot(STREAM)
    assert snapshot is not None
    assert snapshot.version == 30
    assert snapshot.data["recent_command_ids"] == [f"r-{n}" for n in range(10, 30)]
    covered = (await store.read_stream(STREAM))[: snapshot.version]
    assert snapshot.data["state"] == INVENTORY.snapshots.to_data(  # type: ignore[union-attr]
        INVENTORY.fold("SKU", covered)
    )
