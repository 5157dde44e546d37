"""Inventory's snapshots (domain/inventory/snapshots.py): for any history and any point
in it, the state read back from a snapshot (through JSON, as a store keeps it) and folded
on with the rest of the stream equals the full fold."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.inventory.commands import (
    CommitReservation,
    ReceiveStock,
    ReleaseReservation,
    ReserveStock,
)
from domain.inventory.errors import InventoryRuleViolation
from domain.inventory.events import CODEC, DomainEvent
from domain.inventory.inventory import Inventory, decide, rebuild
from domain.inventory.snapshots import SNAPSHOTS

ORDERS = [f"o-{n}" for n in range(6)]
T0 = datetime(2026, 1, 1, tzinfo=UTC)

commands = st.lists(
    st.one_of(
        st.builds(ReceiveStock, st.just("SKU"), st.integers(1, 50)),
        st.builds(ReserveStock, st.just("SKU"), st.sampled_from(ORDERS), st.integers(1, 30)),
        st.builds(ReleaseReservation, st.just("SKU"), st.sampled_from(ORDERS)),
        st.builds(CommitReservation, st.just("SKU"), st.sampled_from(ORDERS)),
    ),
    max_size=120,
)


def history_of(sent: list[object]) -> list[DomainEvent]:
    """The events the rules accept from `sent`, in order: a stream the aggregate wrote."""
    state, events = Inventory("SKU"), []
    for command in sent:
        try:
            new = decide(state, command)  # type: ignore[arg-type]
        except InventoryRuleViolation:
            continue
        for event in new:
            state = state.apply(event)
        events.extend(new)
    return events


def through_the_store(state: Inventory) -> Inventory:
    return SNAPSHOTS.from_data(json.loads(json.dumps(SNAPSHOTS.to_data(state))))


@settings(max_examples=300, deadline=None)
@given(sent=commands, data=st.data())
def test_snapshot_plus_tail_equals_the_full_fold(sent: list[object], data: st.DataObject) -> None:
    events = history_of(sent)
    at = data.draw(st.integers(0, len(events)), label="snapshot after event")
    snapshot = through_the_store(rebuild("SKU", events[:at]))
    assert snapshot.version == at
    resumed = SNAPSHOTS.resume(snapshot, events[at:])
    full = rebuild("SKU", events)
    assert resumed == full
    assert dict(resumed.reservations) == dict(full.reservations)
    # and the snapshot itself was not changed by folding on from it
    assert snapshot == through_the_store(rebuild("SKU", events[:at]))


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"sku": "SKU", "version": "3"},
        {
            "sku": "SKU",
            "version": 1,
            "on_hand": 1,
            "reserved": 0,
            "reservations": [],
            "received_total": 1,
            "committed_total": 0,
        },
    ],
)
def test_data_that_is_no_inventory_is_refused(broken: dict[str, object]) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        SNAPSHOTS.from_data(broken)


@settings(max_examples=100, deadline=None)
@given(sent=commands, data=st.data())
async def test_a_load_from_any_stored_snapshot_equals_the_full_fold(
    sent: list[object], data: st.DataObject
) -> None:
    """The same through the command path's loader and a store: rejection markers anywhere
    in the stream, the snapshot (with its envelope) at any stream version."""
    from conveyor.aggregates.inventory import INVENTORY
    from conveyor.application.loading import AggregateLoader, snapshot_of
    from conveyor.eventstore.memory import InMemoryEventStore
    from conveyor.eventstore.port import NO_STREAM, NewEvent

    events = history_of(sent)
    stored: list[NewEvent] = []
    for index, event in enumerate(events):
        if data.draw(st.booleans(), label=f"marker before {index}"):
            stored.append(
                NewEvent(uuid.uuid4(), "CommandRejected", {"rule": "r"}, T0, 1, {"command_id": "x"})
            )
        stored.append(
            NewEvent(
                uuid.uuid4(),
                type(event).__name__,
                CODEC.to_data(event),
                T0,
                1,
                {"command_id": f"c-{index}"},
            )
        )
    store = InMemoryEventStore()
    if stored:
        await store.append("inventory-SKU", NO_STREAM, stored)
    at = data.draw(st.integers(0, len(stored)), label="snapshot at stream version")
    covered = await store.read_stream("inventory-SKU", to_version=at)
    if at:
        await store.save_snapshot(
            snapshot_of(
                INVENTORY,
                "inventory-SKU",
                INVENTORY.fold("SKU", covered),
                aggregate_version=sum(1 for e in covered if e.type != "CommandRejected"),
                stream_version=at,
                recent_command_ids=[],
                taken_at=T0,
            )
        )
    loaded = await AggregateLoader(store, clock=lambda: T0).load(INVENTORY, "SKU")
    assert (loaded.base is not None) == bool(at)
    assert loaded.state == rebuild("SKU", events)
    assert loaded.aggregate_version == len(events)
    assert loaded.stream_version == len(stored)
