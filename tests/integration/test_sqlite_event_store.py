"""What only the SQLite adapter promises: group commit, several processes on one file,
event-id uniqueness, and 'unavailable' (not a crash) when the file is locked or unusable."""

from __future__ import annotations

import asyncio
import multiprocessing
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.embedded.sqlite_library import sqlite3
from conveyor.eventstore.port import (
    NO_STREAM,
    ConcurrencyError,
    EventStoreUnavailable,
    NewEvent,
    Snapshot,
    UnreadableSnapshot,
)
from conveyor.eventstore.sqlite import SqliteEventStore


def event(n: int = 0, event_id: uuid.UUID | None = None) -> NewEvent:
    return NewEvent(
        event_id=event_id or uuid.uuid4(),
        type="ItemAdded",
        data={"n": n},
        occurred_at=datetime.now(UTC),
    )


async def test_concurrent_appends_share_transactions(tmp_path: Path) -> None:
    store = await SqliteEventStore(tmp_path / "events.db").open()
    try:
        await asyncio.gather(*(store.append(f"s-{n}", NO_STREAM, [event(n)]) for n in range(300)))
        # 300 appends arrived together: far fewer commits (fsyncs) than appends
        assert store.groups_committed < 50
        assert await store.head_position() == 300
    finally:
        await store.close()


async def test_a_failing_append_in_a_group_does_not_fail_the_others(tmp_path: Path) -> None:
    store = await SqliteEventStore(tmp_path / "events.db").open()
    try:
        await store.append("taken", NO_STREAM, [event()])
        results = await asyncio.gather(
            store.append("a", NO_STREAM, [event()]),
            store.append("taken", NO_STREAM, [event()]),
            store.append("b", NO_STREAM, [event()]),
            return_exceptions=True,
        )
        assert isinstance(results[1], ConcurrencyError)
        assert len(await store.read_stream("a")) == 1
        assert len(await store.read_stream("b")) == 1
    finally:
        await store.close()


async def test_an_event_id_is_stored_once_even_at_another_version(tmp_path: Path) -> None:
    store = await SqliteEventStore(tmp_path / "events.db").open()
    try:
        same = uuid.uuid4()
        await store.append("s", NO_STREAM, [event(1, same)])
        with pytest.raises(ConcurrencyError):
            await store.append("s", 1, [event(2, same)])
        assert len(await store.read_stream("s")) == 1
    finally:
        await store.close()


def _append_from_another_process(path: str, worker: int, count: int) -> None:
    async def main() -> None:
        store = await SqliteEventStore(path, busy_timeout=30).open()
        try:
            for n in range(count):
                while True:  # compete for the same streams: retry on conflict
                    stream = f"shared-{n % 5}"
                    version = len(await store.read_stream(stream))
                    try:
                        await store.append(stream, version, [event(worker * 1000 + n)])
                        break
                    except ConcurrencyError:
                        continue
        finally:
            await store.close()

    asyncio.run(main())


async def test_several_processes_appending_to_the_same_streams_stay_consistent(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "events.db")
    await (await SqliteEventStore(path).open()).close()  # create the schema once
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_append_from_another_process, args=(path, w, 60)) for w in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    store = await SqliteEventStore(path).open()
    try:
        total = 0
        for s in range(5):
            events = await store.read_stream(f"shared-{s}")
            assert [e.version for e in events] == list(range(1, len(events) + 1))
            total += len(events)
        assert total == 180
        log = await store.read_all(limit=1000)
        assert len({e.data["n"] for e in log}) == 180  # every append exactly once
    finally:
        await store.close()


async def test_a_locked_database_is_reported_unavailable_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = await SqliteEventStore(path, busy_timeout=0.2).open()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(EventStoreUnavailable, match="locked"):
            await store.append("s", NO_STREAM, [event()])
        blocker.execute("ROLLBACK")
        result = await store.append("s", NO_STREAM, [event()])
        assert result.version == 1
    finally:
        blocker.close()
        await store.close()


async def test_an_unusable_path_is_reported_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(EventStoreUnavailable, match="not a directory"):
        await SqliteEventStore(tmp_path / "file" / "events.db").open()


async def test_a_file_that_is_not_a_database_is_reported_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(EventStoreUnavailable, match="not a database"):
        await SqliteEventStore(path).open()


async def test_a_write_after_close_fails_at_once(tmp_path: Path) -> None:
    store = await SqliteEventStore(tmp_path / "events.db").open()
    await store.close()
    with pytest.raises(EventStoreUnavailable):
        await asyncio.wait_for(store.append("s", NO_STREAM, [event()]), 2)
    with pytest.raises(EventStoreUnavailable):
        await asyncio.wait_for(store.read_stream("s"), 2)


async def test_writes_queued_while_closing_are_failed_not_left_waiting(tmp_path: Path) -> None:
    store = await SqliteEventStore(tmp_path / "events.db").open()
    writes = [
        asyncio.create_task(store.append(f"s-{n}", NO_STREAM, [event(n)])) for n in range(200)
    ]
    await asyncio.sleep(0)  # all queued
    await store.close()
    results = await asyncio.wait_for(asyncio.gather(*writes, return_exceptions=True), 5)
    for result in results:  # each either committed or was told it was not
        assert not isinstance(result, BaseException) or isinstance(result, EventStoreUnavailable)


def test_processes_opening_a_new_file_at_once_all_start(tmp_path: Path) -> None:
    """Worker processes started together race to switch a new file to WAL and create the
    schema; the loser must wait its turn, not exit with 'database is locked'."""
    path = tmp_path / "events.db"
    script = (
        "import asyncio, sys\n"
        "from conveyor.eventstore.sqlite import SqliteEventStore\n"
        "async def main():\n"
        "    store = await SqliteEventStore(sys.argv[1], busy_timeout=0.001).open()\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    starters = [
        subprocess.Popen([sys.executable, "-c", script, str(path)], stderr=subprocess.PIPE)
        for _ in range(16)
    ]
    outcomes = [(p.wait(timeout=60), p.communicate()[1].decode()) for p in starters]
    assert [error for code, error in outcomes if code != 0] == []


async def test_an_unreadable_snapshot_is_reported_as_such(tmp_path: Path) -> None:
    """A snapshot row that is no JSON object is refused with UnreadableSnapshot (the
    command path then folds in full); a file written before snapshots gets the table."""
    path = tmp_path / "events.db"
    store = await SqliteEventStore(path).open()
    await store.save_snapshot(
        Snapshot("inventory-SKU", 3, 1, {"on_hand": 3}, datetime(2026, 1, 1, tzinfo=UTC))
    )
    await store.close()
    raw = sqlite3.connect(path)
    raw.execute("UPDATE snapshots SET data = '{\"on_hand\": ' WHERE stream_id = 'inventory-SKU'")
    raw.commit()
    raw.close()
    store = await SqliteEventStore(path).open()
    try:
        with pytest.raises(UnreadableSnapshot, match="inventory-SKU"):
            await store.load_snapshot("inventory-SKU")
    finally:
        await store.close()
