"""The shared SQLite plumbing (conveyor/embedded/sqlite.py) on real files: the group-commit writer's
failure handling, the settings it asks SQLite for, and the library it refuses to run on."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.embedded.sqlite import SqliteDatabase, SqliteFileUnusable
from conveyor.embedded.sqlite_library import has_wal_reset_bug, linked_version, sqlite3


class Unavailable(Exception):
    pass


class Abort(BaseException):
    """What an operation may raise that is no Exception (SystemExit, KeyboardInterrupt…)."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS t (v TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS doom BEFORE INSERT ON t WHEN NEW.v = 'doom'
BEGIN SELECT RAISE(ROLLBACK, 'the whole transaction is rolled back'); END;
"""


def database(path: Path, **options: Any) -> SqliteDatabase:
    return SqliteDatabase(path, schema=SCHEMA, unavailable=Unavailable, **options)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    opened = database(tmp_path / "db.sqlite", busy_timeout=0.5)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def insert(value: str) -> Any:
    def run(connection: sqlite3.Connection) -> str:
        connection.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value

    return run


async def stored(db: SqliteDatabase) -> list[str]:
    rows = await db.read(lambda c: c.execute("SELECT v FROM t ORDER BY rowid").fetchall())
    return [v for (v,) in rows]


# -- item 2: a writer that cannot die silently ------------------------------------------


async def test_an_operation_raising_a_base_exception_fails_every_write_instead_of_hanging(
    db: SqliteDatabase, tmp_path: Path
) -> None:
    def abort(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO t (v) VALUES ('half-done')")
        raise Abort("stop")

    writes = [
        asyncio.ensure_future(db.write(op)) for op in (insert("before"), abort, insert("after"))
    ]
    results = await asyncio.wait_for(asyncio.gather(*writes, return_exceptions=True), 5)
    assert all(isinstance(result, Unavailable) for result in results), results
    # The store says it is gone at once, rather than queueing writes nobody will run.
    with pytest.raises(Unavailable, match="writer stopped"):
        await asyncio.wait_for(db.write(insert("later")), 2)
    with pytest.raises(Unavailable, match="writer stopped"):  # so health checks turn red
        await db.read(lambda c: c.execute("SELECT 1").fetchone())
    # The open transaction was rolled back: another process can write, nothing half-done.
    other = sqlite3.connect(tmp_path / "db.sqlite", timeout=0.5, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        assert other.execute("SELECT v FROM t").fetchall() == []
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_cancelled_close_leaves_no_write_waiting(tmp_path: Path) -> None:
    db = database(tmp_path / "db.sqlite")
    await db.open()
    release = threading.Event()

    def slow(connection: sqlite3.Connection) -> str:
        release.wait(5)
        connection.execute("INSERT INTO t (v) VALUES ('slow')")
        return "slow"

    slow_write = asyncio.ensure_future(db.write(slow))
    await asyncio.sleep(0.1)  # the writer is inside `slow`
    queued = asyncio.ensure_future(db.write(insert("queued")))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(db.close())
    await asyncio.sleep(0.1)
    closing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closing
    release.set()
    assert await asyncio.wait_for(slow_write, 5) == "slow"
    assert await asyncio.wait_for(queued, 5) == "queued"  # queued before close: written
    with pytest.raises(Unavailable):
        await asyncio.wait_for(db.write(insert("late")), 2)
    await asyncio.wait_for(db.close(), 5)  # closing again finishes the job


async def test_a_write_cancelled_before_it_started_is_not_made(db: SqliteDatabase) -> None:
    release = threading.Event()

    def slow(connection: sqlite3.Connection) -> str:
        release.wait(5)
        return "slow"

    slow_write = asyncio.ensure_future(db.write(slow))
    await asyncio.sleep(0.1)  # the writer is inside `slow`
    given_up = asyncio.ensure_future(db.write(insert("given up")))
    await asyncio.sleep(0)  # queued
    given_up.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await given_up
    release.set()
    assert await slow_write == "slow"
    await db.write(insert("after"))
    assert await stored(db) == ["after"]


# -- item 3: one bad write fails alone -----------------------------------------------------


async def test_a_write_with_a_database_error_fails_alone(db: SqliteDatabase) -> None:
    def malformed(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO t (v) VALUES (json_extract('{', '$.a'))")

    results = await asyncio.gather(
        db.write(insert("a")), db.write(malformed), db.write(insert("b")), return_exceptions=True
    )
    assert (results[0], results[2]) == ("a", "b"), results
    assert isinstance(results[1], Unavailable)
    assert "malformed JSON" in str(results[1])
    assert await stored(db) == ["a", "b"]


async def test_a_write_that_rolls_back_the_whole_transaction_fails_alone(
    db: SqliteDatabase,
) -> None:
    results = await asyncio.gather(
        db.write(insert("a")),
        db.write(insert("doom")),
        db.write(insert("b")),
        return_exceptions=True,
    )
    assert (results[0], results[2]) == ("a", "b"), results
    assert isinstance(results[1], sqlite3.IntegrityError | Unavailable), results
    assert "rolled back" in str(results[1])
    assert await stored(db) == ["a", "b"]


# -- item 7: the settings asked for are the settings in force ------------------------------


async def test_a_database_that_cannot_use_wal_is_refused() -> None:
    with pytest.raises(Exception, match="journal mode"):
        await database(Path(":memory:")).open()


async def test_the_wal_file_shrinks_back_after_a_spike(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    db = database(path, journal_size_limit=256 * 1024)
    await db.open()
    try:
        spike = "x" * 4000
        await db.write(lambda c: c.executemany("INSERT INTO t (v) VALUES (?)", [(spike,)] * 3000))
        wal = Path(f"{path}-wal")
        assert wal.stat().st_size > 4 * 1024 * 1024
        for n in range(3):  # the spike is checkpointed; the next commits restart the WAL
            await db.write(insert(str(n)))
        assert wal.stat().st_size <= 256 * 1024
    finally:
        await db.close()


# -- item 1: a SQLite library with the WAL-reset bug ----------------------------------------


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ("3.40.1", True),  # Debian 12
        ("3.51.2", True),
        ("3.44.5", True),
        ("3.44.6", False),
        ("3.50.6", True),
        ("3.50.7", False),
        ("3.51.3", False),
        ("3.53.4", False),
        ("3.6.23", False),  # no WAL at all
    ],
)
def test_which_versions_have_the_wal_reset_bug(version: str, affected: bool) -> None:
    assert has_wal_reset_bug(version) is affected


def test_the_library_linked_has_no_wal_reset_bug() -> None:
    assert not has_wal_reset_bug(linked_version()), linked_version()


async def test_an_affected_sqlite_library_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.40.1")
    with pytest.raises(SqliteFileUnusable, match=r"3\.40\.1.*WAL-reset"):
        await database(tmp_path / "db.sqlite").open()
    assert not (tmp_path / "db.sqlite").exists()  # refused before anything was created


async def test_an_affected_sqlite_library_allowed_for_one_process_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.50.4")
    db = database(tmp_path / "db.sqlite", allow_affected_sqlite=True)
    await db.open()
    try:
        assert await db.write(insert("a")) == "a"
    finally:
        await db.close()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert any("WAL-reset" in r.getMessage() and "3.50.4" in r.getMessage() for r in warnings)
