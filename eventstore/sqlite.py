"""The embedded event store: one SQLite file in WAL mode.

Appends go through a single writer (a dedicated thread with its own connection). Appends
that arrive while a transaction is being written wait, and are then committed together in
the next transaction: one fsync for the whole group instead of one per command (group
commit). Each append in a group checks its expected version inside the same write
transaction, under SQLite's write lock, so several worker processes sharing the file stay
correct: the lock serialises their groups, and UNIQUE(stream_id, version) is the last guard.

Reads run on a small pool of reader threads; WAL lets them proceed while a write is under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from eventstore.port import (
    AppendResult,
    ConcurrencyError,
    EventStoreUnavailable,
    NewEvent,
    RecordedEvent,
)
from eventstore.serialization import dumps, format_time, parse_time, to_utc

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT    NOT NULL UNIQUE,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    type           TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    occurred_at    TEXT    NOT NULL,
    UNIQUE (stream_id, version)
);
"""
# AUTOINCREMENT: a position is never reused, even after a delete, so a stored checkpoint
# can never point at a different event later.

_COLUMNS = (
    "event_id, stream_id, version, position, type, data, occurred_at, schema_version, metadata"
)


@dataclass(slots=True)
class _AppendRequest:
    stream_id: str
    expected_version: int
    rows: list[tuple[Any, ...]]
    future: asyncio.Future[AppendResult]


_STOP = object()


class SqliteEventStore:
    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 5.0,
        max_group: int = 512,
        readers: int = 4,
    ) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._max_group = max_group
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._writer_connection: sqlite3.Connection | None = None
        self._queue: asyncio.Queue[_AppendRequest | object] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self.groups_committed = 0
        """How many write transactions carried the appends so far (group commit at work)."""

    def __repr__(self) -> str:
        return f"SqliteEventStore({str(self.path)!r})"

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> SqliteEventStore:
        loop = asyncio.get_running_loop()
        try:
            self._writer_connection = await loop.run_in_executor(self._writer, self._open_writer)
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise EventStoreUnavailable(
                f"cannot open SQLite event store {self.path}: {exc}"
            ) from exc
        self._queue = asyncio.Queue()
        self._writer_task = asyncio.create_task(self._write_loop(), name="sqlite-group-commit")
        return self

    async def close(self) -> None:
        if self._writer_task is not None and self._queue is not None:
            await self._queue.put(_STOP)
            await self._writer_task
            self._writer_task = None
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,  # explicit BEGIN/COMMIT only
            check_same_thread=False,
        )
        connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        with self._connections_lock:
            self._connections.append(connection)
        return connection

    def _open_writer(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise OSError(f"{self.path.parent} exists and is not a directory") from None
        connection = self._connect()
        connection.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit the caller was told about survives power loss, not just a crash.
        connection.execute("PRAGMA synchronous = FULL")
        connection.executescript(SCHEMA)
        return connection

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            connection.execute("PRAGMA query_only = 1")
            self._local.connection = connection
        return connection

    # -- appends (group commit) --------------------------------------------------------

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        if self._queue is None:
            raise EventStoreUnavailable("SQLite event store is not open")
        rows = [
            (
                str(event.event_id),
                stream_id,
                expected_version + offset,
                event.type,
                event.schema_version,
                dumps(event.data),
                dumps(event.metadata),
                format_time(event.occurred_at),
            )
            for offset, event in enumerate(events, start=1)
        ]
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        await self._queue.put(_AppendRequest(stream_id, expected_version, rows, future))
        return await future

    async def _write_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is _STOP:
                return
            group: list[_AppendRequest] = [first]  # type: ignore[list-item]
            while len(group) < self._max_group and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is _STOP:
                    stopping = True
                    break
                group.append(item)  # type: ignore[arg-type]
            try:
                outcomes = await loop.run_in_executor(self._writer, self._write_group, group)
            except Exception as exc:  # the loop must outlive any single failure
                failure = EventStoreUnavailable(f"SQLite event store {self.path}: {exc}")
                outcomes = [failure] * len(group)
            for request, outcome in zip(group, outcomes, strict=True):
                if request.future.done():  # the caller gave up (cancelled)
                    continue
                if isinstance(outcome, BaseException):
                    request.future.set_exception(outcome)
                else:
                    request.future.set_result(outcome)

    def _write_group(self, group: list[_AppendRequest]) -> list[AppendResult | Exception]:
        connection = self._writer_connection
        assert connection is not None
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            failure = EventStoreUnavailable(f"SQLite event store {self.path} is unavailable: {exc}")
            return [failure] * len(group)
        outcomes: list[AppendResult | Exception] = []
        try:
            for request in group:
                outcomes.append(self._append_in_transaction(connection, request))
            connection.execute("COMMIT")
            self.groups_committed += 1
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            failure = EventStoreUnavailable(
                f"SQLite event store {self.path} failed to commit: {exc}"
            )
            return [failure] * len(group)
        return outcomes

    @staticmethod
    def _append_in_transaction(
        connection: sqlite3.Connection, request: _AppendRequest
    ) -> AppendResult | Exception:
        (current,) = connection.execute(
            "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?",
            (request.stream_id,),
        ).fetchone()
        if current != request.expected_version:
            return ConcurrencyError(request.stream_id, request.expected_version, current)
        if not request.rows:
            return AppendResult(version=current, position=0)
        connection.execute("SAVEPOINT append_one")
        try:
            connection.executemany(
                "INSERT INTO events (event_id, stream_id, version, type, schema_version, data,"
                " metadata, occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                request.rows,
            )
        except sqlite3.IntegrityError:
            # An event id already stored: the same events were appended before.
            connection.execute("ROLLBACK TO append_one")
            connection.execute("RELEASE append_one")
            return ConcurrencyError(request.stream_id, request.expected_version, None)
        connection.execute("RELEASE append_one")
        (position,) = connection.execute("SELECT last_insert_rowid()").fetchone()
        return AppendResult(version=current + len(request.rows), position=position)

    # -- reads -------------------------------------------------------------------------

    async def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        def query() -> list[tuple[Any, ...]]:
            return self._reader().execute(sql, parameters).fetchall()

        try:
            return await asyncio.get_running_loop().run_in_executor(self._readers, query)
        except sqlite3.Error as exc:
            raise EventStoreUnavailable(f"SQLite event store {self.path}: {exc}") from exc

    async def read_stream(
        self, stream_id: str, *, to_version: int | None = None, as_of: datetime | None = None
    ) -> list[RecordedEvent]:
        sql = f"SELECT {_COLUMNS} FROM events WHERE stream_id = ?"
        parameters: tuple[Any, ...] = (stream_id,)
        if to_version is not None:
            sql += " AND version <= ?"
            parameters += (to_version,)
        events = [_recorded(row) for row in await self._read(sql + " ORDER BY version", parameters)]
        if as_of is not None:
            cutoff = to_utc(as_of)
            for index, event in enumerate(events):
                if event.occurred_at > cutoff:
                    return events[:index]
        return events

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
            (after, limit),
        )
        return [_recorded(row) for row in rows]

    async def head_position(self) -> int:
        rows = await self._read("SELECT COALESCE(MAX(position), 0) FROM events", ())
        return int(rows[0][0])

    async def ping(self) -> None:
        await self._read("SELECT 1", ())


def _recorded(row: tuple[Any, ...]) -> RecordedEvent:
    event_id, stream_id, version, position, type_, data, occurred_at, schema_version, metadata = row
    return RecordedEvent(
        event_id=UUID(event_id),
        stream_id=stream_id,
        version=version,
        position=position,
        type=type_,
        data=json.loads(data),
        occurred_at=parse_time(occurred_at),
        schema_version=schema_version,
        metadata=json.loads(metadata),
    )
