"""What only the SQLite read-model store promises: group commit, several store instances
(processes) on one file, indexes the queries actually use, and 'unavailable' (not a crash)
when the file is locked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conveyor.embedded.sqlite_library import sqlite3
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.readmodels.port import Document, ReadStoreUnavailable, RevisionConflict
from conveyor.readmodels.sqlite import SqliteReadModelStore


async def test_concurrent_puts_share_transactions(tmp_path: Path) -> None:
    store = await SqliteReadModelStore(tmp_path / "read.db").open()
    try:
        await store.ensure_collection("orders")
        before = store.groups_committed
        await asyncio.gather(
            *(store.put("orders", f"d{n}", {"n": n}, expected_rev=0) for n in range(300))
        )
        # 300 writes arrived together: far fewer commits (fsyncs) than writes
        assert store.groups_committed - before < 50
        assert await store.count("orders") == 300
    finally:
        await store.close()


async def test_a_conflicting_put_in_a_group_does_not_fail_the_others(tmp_path: Path) -> None:
    store = await SqliteReadModelStore(tmp_path / "read.db").open()
    try:
        await store.put("orders", "taken", {"v": 1}, expected_rev=0)
        results = await asyncio.gather(
            store.put("orders", "a", {"v": 1}, expected_rev=0),
            store.put("orders", "taken", {"v": 2}, expected_rev=0),
            store.put("orders", "b", {"v": 1}, expected_rev=0),
            return_exceptions=True,
        )
        assert results[0] == 1
        assert isinstance(results[1], RevisionConflict)
        assert results[2] == 1
        assert await store.get("orders", "taken") == Document("taken", 1, {"v": 1})
    finally:
        await store.close()


async def test_two_stores_on_one_file_see_each_other_and_compare_and_set_between_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "read.db"
    first = await SqliteReadModelStore(path).open()
    second = await SqliteReadModelStore(path).open()
    try:
        await first.ensure_collection("orders", [("status",)])
        assert await second.put("orders", "d", {"status": "new"}, expected_rev=0) == 1
        assert await first.get("orders", "d") == Document("d", 1, {"status": "new"})

        assert await first.put("orders", "d", {"status": "paid"}, expected_rev=1) == 2
        with pytest.raises(RevisionConflict):
            await second.put("orders", "d", {"status": "lost"}, expected_rev=1)
        assert [d.id for d in await second.find("orders", where={"status": "paid"})] == ["d"]
        assert await second.list_collections() == ["orders"]
    finally:
        await first.close()
        await second.close()


async def test_a_collection_dropped_by_another_store_is_recreated_by_the_next_put(
    tmp_path: Path,
) -> None:
    path = tmp_path / "read.db"
    first = await SqliteReadModelStore(path).open()
    second = await SqliteReadModelStore(path).open()
    try:
        await first.put("orders", "a", {"v": 1}, expected_rev=0)  # first has the table cached
        await second.drop_collection("orders")
        assert await first.get("orders", "a") is None
        assert await first.put("orders", "b", {"v": 2}, expected_rev=0) == 1
        await first.put_many("orders", {"c": {"v": 3}})
        assert sorted(await second.get_many("orders", ["a", "b", "c"])) == ["b", "c"]
        assert await second.list_collections() == ["orders"]
    finally:
        await first.close()
        await second.close()


async def test_a_locked_database_is_reported_unavailable_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "read.db"
    store = await SqliteReadModelStore(path, busy_timeout=0.2).open()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        await store.put("orders", "d", {"v": 1}, expected_rev=0)
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(ReadStoreUnavailable, match="locked"):
            await store.put("orders", "d", {"v": 2}, expected_rev=1)
        with pytest.raises(ReadStoreUnavailable, match="locked"):
            await store.put_many("orders", {"e": {"v": 1}})
        # WAL: readers carry on while the writer is locked out
        assert await store.get("orders", "d") == Document("d", 1, {"v": 1})
        blocker.execute("ROLLBACK")
        assert await store.put("orders", "d", {"v": 2}, expected_rev=1) == 2
    finally:
        blocker.close()
        await store.close()


async def test_a_file_that_is_not_a_database_is_reported_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "read.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ReadStoreUnavailable, match="not a database"):
        await SqliteReadModelStore(path).open()


async def test_queries_use_the_declared_index_for_filter_and_order(tmp_path: Path) -> None:
    path = tmp_path / "read.db"
    store = await SqliteReadModelStore(path).open()
    try:
        await store.ensure_collection("orders", [("status", "created_at")])
        await store.put_many(
            "orders", {f"d{n}": {"status": "pending", "created_at": f"{n:04}"} for n in range(50)}
        )
        found = await store.find(
            "orders",
            where={"status": "pending"},
            before=("created_at", "0010"),
            order_by="created_at",
            descending=True,
            limit=3,
        )
        assert [d.id for d in found] == ["d9", "d8", "d7"]
    finally:
        await store.close()
    # The planner only picks an expression index for the very expression the query uses:
    # this fails if the adapter's query and index spellings drift apart.
    connection = sqlite3.connect(path)
    try:
        plan = connection.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM orders"
            " WHERE json_extract(body, '$.status') = ? AND json_type(body, '$.status') = 'text'"
            " AND json_extract(body, '$.created_at') < ?"
            " AND json_type(body, '$.created_at') = 'text'"
            " ORDER BY json_extract(body, '$.created_at') DESC, id DESC LIMIT 3",
            ("pending", "0010"),
        ).fetchall()
    finally:
        connection.close()
    details = " ".join(row[-1] for row in plan)
    assert "USING INDEX orders:status,created_at" in details
    assert "TEMP B-TREE" not in details  # the index alone gives the order, ties included


async def test_the_registry_and_other_tables_in_the_file_are_not_collections(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    events = await SqliteEventStore(path).open()  # the event store may share the file
    store = await SqliteReadModelStore(path).open()
    try:
        await store.ensure_collection("orders")
        assert await store.list_collections() == ["orders"]
    finally:
        await store.close()
        await events.close()


async def test_collection_names_sqlite_reserves_are_refused(tmp_path: Path) -> None:
    store = await SqliteReadModelStore(tmp_path / "read.db").open()
    try:
        with pytest.raises(ValueError, match="sqlite_"):
            await store.put("sqlite_stat1", "d", {}, expected_rev=0)
    finally:
        await store.close()


async def test_a_body_that_is_not_json_fails_only_its_own_write(tmp_path: Path) -> None:
    store = await SqliteReadModelStore(tmp_path / "read.db").open()
    try:
        with pytest.raises(ValueError, match="JSON"):
            await store.put("orders", "nan", {"v": float("nan")}, expected_rev=0)
        with pytest.raises(TypeError):
            await store.put_many("orders", {"set": {"v": {1, 2}}})
        assert await store.put("orders", "ok", {"v": 1}, expected_rev=0) == 1
        assert await store.count("orders") == 1
    finally:
        await store.close()
