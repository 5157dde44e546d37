"""The embedded event store: one SQLite file in WAL mode.

Appends share transactions (group commit, see conveyor/embedded/sqlite.py): one fsync per group of
concurrent appends rather than one per command. Each append checks its expected version
inside the write transaction, under SQLite's write lock, so several worker processes
sharing the file stay correct: the lock serialises their groups, and
UNIQUE(stream_id, version) and UNIQUE(event_id) are the last guards.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, SafeUUID

from conveyor.embedded.sqlite import SqliteAdapter
from conveyor.embedded.sqlite_library import sqlite3
from conveyor.eventstore.port import (
    AppendResult,
    ConcurrencyError,
    EventStoreUnavailable,
    NewEvent,
    RecordedEvent,
    Snapshot,
    UnreadableSnapshot,
)
from conveyor.eventstore.serialization import dumps, format_time, parse_time, to_utc

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
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id      TEXT    PRIMARY KEY,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    data           TEXT    NOT NULL,
    taken_at       TEXT    NOT NULL
);
"""
# Snapshots have a table of their own, outside `events`: the global log (gateway, rebuilds,
# positions) never sees one, and a file written before snapshots gets the table on open.
# AUTOINCREMENT: a position is never reused, even after a delete, so a stored checkpoint
# can never point at a different event later.

_COLUMNS = (
    "event_id, stream_id, version, position, type, data, occurred_at, schema_version, metadata"
)


class SqliteEventStore(SqliteAdapter):
    schema = SCHEMA
    unavailable = EventStoreUnavailable

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
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

        def append_in_transaction(connection: sqlite3.Connection) -> AppendResult:
            (current,) = connection.execute(
                "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?", (stream_id,)
            ).fetchone()
            if current != expected_version:
                raise ConcurrencyError(stream_id, expected_version, current)
            if not rows:
                return AppendResult(version=current, position=0)
            try:
                connection.executemany(
                    "INSERT INTO events (event_id, stream_id, version, type, schema_version,"
                    " data, metadata, occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except sqlite3.IntegrityError:
                # An event id stored already: these events were appended before.
                raise ConcurrencyError(stream_id, expected_version, None) from None
            (position,) = connection.execute("SELECT last_insert_rowid()").fetchone()
            return AppendResult(version=current + len(rows), position=position)

        return await self._database.write(append_in_transaction)

    async def _select(self, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return await self._database.read(lambda c: c.execute(sql, parameters).fetchall())

    async def read_stream(
        self,
        stream_id: str,
        *,
        to_version: int | None = None,
        as_of: datetime | None = None,
        after_version: int = 0,
    ) -> list[RecordedEvent]:
        sql = f"SELECT {_COLUMNS} FROM events WHERE stream_id = ? AND version > ?"
        parameters: tuple[Any, ...] = (stream_id, after_version)
        if to_version is not None:
            sql += " AND version <= ?"
            parameters += (to_version,)
        rows = await self._select(sql + " ORDER BY version", parameters)
        events = [_recorded(row) for row in rows]
        if as_of is not None:
            cutoff = to_utc(as_of)
            for index, event in enumerate(events):
                if event.occurred_at > cutoff:
                    return events[:index]
        return events

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        rows = await self._select(
            f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
            (after, limit),
        )
        gc_enabled = gc.isenabled()
        gc.disable()  # decoding only allocates: cyclic collections would rescan it all
        try:
            return [_recorded(row) for row in rows]
        finally:
            if gc_enabled:
                gc.enable()

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        row = (
            snapshot.stream_id,
            snapshot.version,
            snapshot.schema_version,
            dumps(snapshot.data),
            format_time(snapshot.taken_at),
        )

        def upsert(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO snapshots (stream_id, version, schema_version, data, taken_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream_id) DO UPDATE SET"
                " version = excluded.version, schema_version = excluded.schema_version,"
                " data = excluded.data, taken_at = excluded.taken_at"
                " WHERE excluded.version > snapshots.version",
                row,
            )

        await self._database.write(upsert)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        rows = await self._select(
            "SELECT version, schema_version, data, taken_at FROM snapshots WHERE stream_id = ?",
            (stream_id,),
        )
        if not rows:
            return None
        version, schema_version, data, taken_at = rows[0]
        try:
            decoded = json.loads(data)
            if not isinstance(decoded, dict):
                raise TypeError(f"a JSON {type(decoded).__name__}, not an object")
            return Snapshot(stream_id, int(version), int(schema_version), decoded, _time(taken_at))
        except (ValueError, TypeError) as exc:
            raise UnreadableSnapshot(f"snapshot of {stream_id!r}: {exc}") from exc

    async def head_position(self) -> int:
        rows = await self._select("SELECT COALESCE(MAX(position), 0) FROM events", ())
        return int(rows[0][0])

    async def ping(self) -> None:
        await self._select("SELECT 1", ())


def _recorded(row: tuple[Any, ...]) -> RecordedEvent:
    event_id, stream_id, version, position, type_, data, occurred_at, schema_version, metadata = row
    # Positional: the fields in declaration order (a little faster than keywords).
    return RecordedEvent(
        _uuid(event_id),
        stream_id,
        version,
        position,
        type_,
        _loads(data),
        _time(occurred_at),
        schema_version,
        _loads(metadata),
    )


# Decoding is most of the cost of reading the log (rebuilds read all of it), so the text
# this module writes takes a shorter way to exactly what json.loads and parse_time return;
# anything else takes theirs.

_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # json.loads' scanner


def _loads(text: Any) -> Any:
    """json.loads(text), skipping its whitespace handling: `dumps` writes none."""
    if type(text) is str:
        try:
            value, end = _scan_json(text, 0)
        except (StopIteration, json.JSONDecodeError):
            pass  # not JSON: let json.loads say why
        else:
            if end == len(text):
                return value
    return json.loads(text)


def _uuid(text: Any) -> UUID:
    """UUID(text), skipping its prefix and brace handling for the 36-character form."""
    if type(text) is str and len(text) == 36:
        digits = text.replace("-", "")
        if len(digits) == 32:
            try:
                value = int(digits, 16)  # what UUID() does with them, too
            except ValueError:
                pass
            else:
                uuid = object.__new__(UUID)
                object.__setattr__(uuid, "int", value)  # as UUID.__init__ sets them
                object.__setattr__(uuid, "is_safe", SafeUUID.unknown)
                return uuid
    return UUID(text)


def _time(text: Any) -> datetime:
    """parse_time(text); format_time's output (…Z, 27 characters) is read directly."""
    if type(text) is str and len(text) == 27 and text[-1] == "Z" and text.count("Z") == 1:
        moment = datetime.fromisoformat(text)  # reads the Z as UTC since Python 3.11
        if moment.tzinfo is UTC:
            return moment
    return parse_time(text)
