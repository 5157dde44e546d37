"""The behaviour every event-store adapter must show. Stream names are unique per test so
the suite can run against a shared server."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.eventstore.port import NO_STREAM, ConcurrencyError, EventStore, NewEvent, Snapshot

T0 = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def stream() -> str:
    return f"order-{uuid.uuid4()}"


def new_event(n: int, *, at: datetime = T0, **metadata: str) -> NewEvent:
    return NewEvent(
        event_id=uuid.uuid4(),
        type="ItemAdded",
        data={"sku": f"SKU-{n}", "quantity": n, "unit_price": "9.99", "note": "caffè ☕"},
        occurred_at=at,
        schema_version=1,
        metadata={"command_id": f"cmd-{n}", "correlation_id": "corr", **metadata},
    )


async def test_append_to_new_stream_and_read_back_every_field(event_store: EventStore) -> None:
    stream_id = stream()
    events = [new_event(1), new_event(2), new_event(3)]
    result = await event_store.append(stream_id, NO_STREAM, events)
    assert result.version == 3

    recorded = await event_store.read_stream(stream_id)
    assert [e.version for e in recorded] == [1, 2, 3]
    assert [e.event_id for e in recorded] == [e.event_id for e in events]
    assert all(e.stream_id == stream_id for e in recorded)
    assert recorded[1].data == events[1].data
    assert recorded[1].metadata == events[1].metadata
    assert recorded[1].occurred_at == T0
    assert recorded[1].type == "ItemAdded"
    assert recorded[1].schema_version == 1
    assert recorded[-1].position == result.position
    assert recorded[0].position < recorded[1].position < recorded[2].position


async def test_append_at_exact_version_extends_the_stream(event_store: EventStore) -> None:
    stream_id = stream()
    await event_store.append(stream_id, NO_STREAM, [new_event(1)])
    result = await event_store.append(stream_id, 1, [new_event(2), new_event(3)])
    assert result.version == 3
    assert [e.version for e in await event_store.read_stream(stream_id)] == [1, 2, 3]


async def test_wrong_expected_version_raises_and_appends_nothing(event_store: EventStore) -> None:
    stream_id = stream()
    await event_store.append(stream_id, NO_STREAM, [new_event(1), new_event(2)])
    for stale in (NO_STREAM, 1, 3):
        with pytest.raises(ConcurrencyError) as caught:
            await event_store.append(stream_id, stale, [new_event(9)])
        assert caught.value.stream_id == stream_id
        assert caught.value.expected == stale
    assert len(await event_store.read_stream(stream_id)) == 2


async def test_expecting_a_version_of_a_missing_stream_raises(event_store: EventStore) -> None:
    with pytest.raises(ConcurrencyError):
        await event_store.append(stream(), 2, [new_event(1)])


async def test_missing_stream_reads_as_empty(event_store: EventStore) -> None:
    assert await event_store.read_stream(stream()) == []


async def test_read_stream_up_to_a_version(event_store: EventStore) -> None:
    stream_id = stream()
    await event_store.append(stream_id, NO_STREAM, [new_event(n) for n in range(1, 6)])
    assert [e.version for e in await event_store.read_stream(stream_id, to_version=3)] == [1, 2, 3]
    assert await event_store.read_stream(stream_id, to_version=0) == []
    assert len(await event_store.read_stream(stream_id, to_version=99)) == 5


async def test_read_stream_as_of_a_point_in_time(event_store: EventStore) -> None:
    stream_id = stream()
    times = [T0 + timedelta(minutes=n) for n in range(4)]
    await event_store.append(
        stream_id, NO_STREAM, [new_event(n, at=at) for n, at in enumerate(times, start=1)]
    )
    as_of = await event_store.read_stream(stream_id, as_of=times[1] + timedelta(seconds=30))
    assert [e.version for e in as_of] == [1, 2]
    exactly = await event_store.read_stream(stream_id, as_of=times[2])
    assert [e.version for e in exactly] == [1, 2, 3]
    assert await event_store.read_stream(stream_id, as_of=T0 - timedelta(days=1)) == []


async def test_global_log_in_commit_order_in_pages(event_store: EventStore) -> None:
    start = await event_store.head_position()
    streams = [stream() for _ in range(3)]
    expected_ids = []
    for round_ in range(3):
        for stream_id in streams:
            event = new_event(round_)
            expected_ids.append(event.event_id)
            await event_store.append(stream_id, round_, [event])

    seen = []
    position = start
    while True:
        page = await event_store.read_all(after=position, limit=4)
        if not page:
            break
        assert len(page) <= 4
        assert all(e.position > position for e in page)
        assert [e.position for e in page] == sorted(e.position for e in page)
        seen.extend(e for e in page if e.stream_id in streams)
        position = page[-1].position
    assert [e.event_id for e in seen] == expected_ids
    assert await event_store.head_position() == position
    assert await event_store.read_all(after=position) == []


async def test_concurrent_appends_at_one_version_let_exactly_one_win(
    event_store: EventStore,
) -> None:
    stream_id = stream()
    await event_store.append(stream_id, NO_STREAM, [new_event(0)])
    results = await asyncio.gather(
        *(event_store.append(stream_id, 1, [new_event(n)]) for n in range(10)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, ConcurrencyError) for r in results if r not in winners)
    assert len(await event_store.read_stream(stream_id)) == 2


async def test_appending_the_same_events_again_at_the_same_version_conflicts(
    event_store: EventStore,
) -> None:
    # Two deliveries of one command decide the same events (same ids) at the same version:
    # the second must learn it lost, so that its handler reloads and answers `duplicate`.
    # (KurrentDB accepts such a repeat as an idempotent no-op; the adapter still reports it.)
    stream_id = stream()
    events = [new_event(1), new_event(2)]
    await event_store.append(stream_id, NO_STREAM, events)
    with pytest.raises(ConcurrencyError):
        await event_store.append(stream_id, NO_STREAM, events)
    assert len(await event_store.read_stream(stream_id)) == 2


async def test_many_concurrent_appends_to_different_streams_all_land(
    event_store: EventStore,
) -> None:
    streams = [stream() for _ in range(200)]
    results = await asyncio.gather(
        *(event_store.append(s, NO_STREAM, [new_event(1), new_event(2)]) for s in streams)
    )
    assert all(r.version == 2 for r in results)
    assert len({r.position for r in results}) == 200
    for s in streams[:5]:
        assert len(await event_store.read_stream(s)) == 2


async def test_ping_answers(event_store: EventStore) -> None:
    await event_store.ping()


async def test_read_stream_after_a_version_reads_only_the_tail(event_store: EventStore) -> None:
    stream_id = stream()
    await event_store.append(stream_id, NO_STREAM, [new_event(n) for n in range(1, 6)])
    assert [e.version for e in await event_store.read_stream(stream_id, after_version=3)] == [
        4,
        5,
    ]
    assert await event_store.read_stream(stream_id, after_version=5) == []
    assert await event_store.read_stream(stream_id, after_version=9) == []
    tail = await event_store.read_stream(stream_id, after_version=2, to_version=4)
    assert [e.version for e in tail] == [3, 4]
    assert await event_store.read_stream(stream(), after_version=2) == []


def snapshot_of(stream_id: str, version: int, **data: object) -> Snapshot:
    return Snapshot(
        stream_id=stream_id,
        version=version,
        schema_version=2,
        data={"available": version, "note": "caffè ☕", **data},
        taken_at=T0 + timedelta(seconds=version),
    )


async def test_a_stream_without_a_snapshot_has_none(event_store: EventStore) -> None:
    assert await event_store.load_snapshot(stream()) is None


async def test_the_latest_snapshot_is_kept_and_read_back_whole(event_store: EventStore) -> None:
    stream_id = stream()
    await event_store.append(stream_id, NO_STREAM, [new_event(n) for n in range(1, 4)])
    await event_store.save_snapshot(snapshot_of(stream_id, 2, ids=["a", "b"]))
    await event_store.save_snapshot(snapshot_of(stream_id, 3))
    loaded = await event_store.load_snapshot(stream_id)
    assert loaded == snapshot_of(stream_id, 3)
    assert loaded is not None
    assert loaded.taken_at == T0 + timedelta(seconds=3)
    other = stream()
    assert await event_store.load_snapshot(other) is None


async def test_an_older_snapshot_never_replaces_a_newer_one(event_store: EventStore) -> None:
    stream_id = stream()
    await event_store.save_snapshot(snapshot_of(stream_id, 7))
    await event_store.save_snapshot(snapshot_of(stream_id, 5))
    loaded = await event_store.load_snapshot(stream_id)
    assert loaded is not None
    assert loaded.version == 7


async def test_snapshots_stay_out_of_streams_and_the_global_log(event_store: EventStore) -> None:
    stream_id = stream()
    await event_store.append(stream_id, NO_STREAM, [new_event(1), new_event(2)])
    head = await event_store.head_position()
    await event_store.save_snapshot(snapshot_of(stream_id, 2))
    assert await event_store.head_position() == head
    assert [e.version for e in await event_store.read_stream(stream_id)] == [1, 2]
    after = await event_store.read_all(after=head, limit=100)
    assert all(e.type != "Snapshot" and "snapshot" not in e.stream_id for e in after)
    await event_store.append(stream_id, 2, [new_event(3)])
    assert [e.version for e in await event_store.read_all(after=head, limit=100)] == [3]
