"""The embedded read-model store: one SQLite file in WAL mode, one table per collection.

Each collection is a table `"<collection>" (id, rev, body)` with the body as JSON text, so
queries on top-level fields are `json_extract(body, '$.<field>')` and the field tuples a
collection declares become expression indexes on exactly those expressions (SQLite only
uses an expression index for a query that spells the same expression). Writes share
transactions (group commit, see conveyor/embedded/sqlite.py); every compare-and-set runs inside the
write transaction, under SQLite's write lock, so several processes sharing the file stay
correct.

Collection and field names end up inside SQL text (a table name and a JSON path cannot be
bound parameters), so every one is checked against a strict pattern first.
"""

from __future__ import annotations

import gc
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from conveyor.embedded.sqlite import SqliteAdapter
from conveyor.embedded.sqlite_library import sqlite3
from conveyor.readmodels.port import (
    Body,
    Document,
    ReadStoreUnavailable,
    RevisionConflict,
    check_collection_name,
)

T = TypeVar("T")

# The registry is what tells our tables from anything else in the file (the event store
# may share it). Its leading underscore keeps it out of the collection-name space.
REGISTRY = "_collections"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {REGISTRY} (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
"""

FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Well under SQLite's bound-parameter limit (32766 since 3.32, 999 before).
_IDS_PER_QUERY = 500

# MongoDB keeps the id and revision beside the body's fields under these names; refusing
# them here too keeps a body that works on one adapter working on the other.
RESERVED_FIELDS = frozenset({"_id", "_rev"})


def check_field_name(name: str) -> str:
    if not isinstance(name, str) or not FIELD_NAME.match(name):
        raise ValueError(f"field name {name!r} must match {FIELD_NAME.pattern}")
    return name


class SqliteReadModelStore(SqliteAdapter):
    schema = SCHEMA
    unavailable = ReadStoreUnavailable

    async def ping(self) -> None:
        # Reads the schema and the registry from the file: SELECT 1 would not touch it.
        await self._database.read(
            lambda connection: connection.execute(f"SELECT count(*) FROM {REGISTRY}").fetchone()
        )

    async def server_time(self) -> float:
        # Every process sharing the file runs on this machine (SQLite's locking needs
        # that), so this machine's clock is the one they all see.
        return time.time()

    # -- collections -------------------------------------------------------------------

    async def ensure_collection(
        self, collection: str, indexes: Sequence[tuple[str, ...]] = ()
    ) -> None:
        table = _table(collection)
        statements = [_index_statement(table, fields) for fields in indexes]

        def ensure(connection: sqlite3.Connection) -> None:
            _create_table(connection, table)
            for statement in statements:
                connection.execute(statement)

        await self._database.write(ensure)

    async def drop_collection(self, collection: str) -> None:
        table = _table(collection)

        def drop(connection: sqlite3.Connection) -> None:
            connection.execute(f'DROP TABLE IF EXISTS "{table}"')  # its indexes go with it
            connection.execute(f"DELETE FROM {REGISTRY} WHERE name = ?", (table,))

        await self._database.write(drop)

    async def list_collections(self) -> list[str]:
        rows = await self._database.read(
            lambda connection: connection.execute(
                f"SELECT name FROM {REGISTRY} ORDER BY name"
            ).fetchall()
        )
        return [name for (name,) in rows]

    # -- reads -------------------------------------------------------------------------

    async def get(self, collection: str, doc_id: str) -> Document | None:
        documents = await self.get_many(collection, [doc_id])
        return documents.get(doc_id)

    async def get_many(self, collection: str, doc_ids: Sequence[str]) -> dict[str, Document]:
        table = _table(collection)
        unique = list(dict.fromkeys(doc_ids))
        if not unique:
            return {}

        def select(connection: sqlite3.Connection) -> list[tuple[Any, ...]]:
            rows: list[tuple[Any, ...]] = []
            for start in range(0, len(unique), _IDS_PER_QUERY):
                chunk = unique[start : start + _IDS_PER_QUERY]
                marks = ", ".join("?" * len(chunk))
                rows += connection.execute(
                    f'SELECT id, rev, body FROM "{table}" WHERE id IN ({marks})', chunk
                ).fetchall()
            return rows

        rows = await self._database.read(_or_if_missing(select, _no_rows))
        return {row[0]: _document(row) for row in rows}

    async def find(
        self,
        collection: str,
        *,
        where: Mapping[str, Any] | None = None,
        before: tuple[str, Any] | None = None,
        order_by: str | None = None,
        descending: bool = False,
        limit: int = 100,
    ) -> list[Document]:
        table = _table(collection)
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        conditions, parameters = _conditions(where, before)
        direction = "DESC" if descending else "ASC"
        order = f"id {direction}"
        if order_by is not None:
            order = f"{_extract(check_field_name(order_by))} {direction}, {order}"
        sql = f'SELECT id, rev, body FROM "{table}"{_where_clause(conditions)} ORDER BY {order}'
        if limit == 0:
            return []
        sql += " LIMIT ?"
        parameters.append(limit)

        rows = await self._database.read(
            _or_if_missing(lambda c: c.execute(sql, parameters).fetchall(), _no_rows)
        )
        return [_document(row) for row in rows]

    async def count(self, collection: str, *, where: Mapping[str, Any] | None = None) -> int:
        table = _table(collection)
        conditions, parameters = _conditions(where, None)
        sql = f'SELECT count(*) FROM "{table}"{_where_clause(conditions)}'
        rows = await self._database.read(
            _or_if_missing(lambda c: c.execute(sql, parameters).fetchall(), lambda: [(0,)])
        )
        return int(rows[0][0])

    # -- writes ------------------------------------------------------------------------

    async def put(
        self,
        collection: str,
        doc_id: str,
        body: Body,
        *,
        expected_rev: int,
        where: Mapping[str, Any] | None = None,
    ) -> int:
        table = _table(collection)
        if expected_rev < 0:
            raise ValueError(f"expected_rev must be >= 0, got {expected_rev}")
        if where and expected_rev == 0:
            raise ValueError("where applies to updates only: a new document has no fields yet")
        conditions, parameters = _conditions(where, None)
        text = _encode(body)

        def create(connection: sqlite3.Connection) -> int:
            def insert() -> sqlite3.Cursor:
                return connection.execute(
                    f'INSERT INTO "{table}" (id, rev, body) VALUES (?, 1, ?) '
                    "ON CONFLICT (id) DO NOTHING",
                    (doc_id, text),
                )

            if _creating_if_missing(connection, table, insert).rowcount == 0:
                raise RevisionConflict(collection, doc_id, expected_rev)
            return 1

        def update(connection: sqlite3.Connection) -> int:
            try:
                cursor = connection.execute(
                    f'UPDATE "{table}" SET rev = ?, body = ? '
                    f"WHERE {' AND '.join(['id = ?', 'rev = ?', *conditions])}",
                    (expected_rev + 1, text, doc_id, expected_rev, *parameters),
                )
            except sqlite3.OperationalError as exc:
                if not _is_missing_table(exc):
                    raise
                # No table, so no document: a revision > 0 cannot match.
                raise RevisionConflict(collection, doc_id, expected_rev) from None
            if cursor.rowcount == 0:
                raise RevisionConflict(collection, doc_id, expected_rev)
            return expected_rev + 1

        return await self._database.write(create if expected_rev == 0 else update)

    async def put_many(self, collection: str, documents: Mapping[str, Body]) -> None:
        _table(collection)
        if not documents:
            return
        # Encoded here rather than in the writer thread: a body that is not JSON fails
        # this caller alone, before it holds up the write transaction of everyone else.
        gc_enabled = gc.isenabled()
        gc.disable()  # encoding a batch only allocates: collections would rescan it all
        try:
            rows = [(doc_id, _encode(body)) for doc_id, body in documents.items()]
        finally:
            if gc_enabled:
                gc.enable()
        await self._upsert(collection, rows)

    async def put_many_json(self, collection: str, documents: Mapping[str, str]) -> None:
        """put_many for bodies already encoded as _encode would (a rebuild's fast path
        builds the text directly); the caller vouches for that."""
        _table(collection)
        if documents:
            await self._upsert(collection, list(documents.items()))

    async def _upsert(self, collection: str, rows: list[tuple[str, str]]) -> None:
        table = _table(collection)

        def upsert(connection: sqlite3.Connection) -> None:
            _creating_if_missing(
                connection,
                table,
                lambda: connection.executemany(
                    f'INSERT INTO "{table}" (id, rev, body) VALUES (?, 1, ?) '
                    "ON CONFLICT (id) DO UPDATE SET rev = rev + 1, body = excluded.body",
                    rows,
                ),
            )

        await self._database.write(upsert)


# -- SQL building ----------------------------------------------------------------------


def _table(collection: str) -> str:
    check_collection_name(collection)
    if collection.startswith("sqlite_"):
        raise ValueError(f"collection name {collection!r}: SQLite reserves the prefix sqlite_")
    return collection


def _extract(field: str) -> str:
    # Spelled identically everywhere (queries and index definitions), so indexes match.
    return f"json_extract(body, '$.{field}')"


def _json_type(field: str) -> str:
    return f"json_type(body, '$.{field}')"


def _json_types(value: Any, *, exact_bool: bool) -> str:
    """SQL that keeps the comparison within the value's JSON type, as MongoDB does.

    json_extract turns JSON true/false into 1/0, and SQLite orders every number before
    every string, so without this `= true` would match 1 and `< "x"` would match numbers.
    """
    if isinstance(value, bool):
        if exact_bool:
            return "= 'true'" if value else "= 'false'"
        return "IN ('true', 'false')"
    if isinstance(value, int | float):
        return "IN ('integer', 'real')"
    if isinstance(value, str):
        return "= 'text'"
    raise TypeError(
        f"query values must be str, int, float, bool or None, got {type(value).__name__}"
    )


def _conditions(
    where: Mapping[str, Any] | None, before: tuple[str, Any] | None
) -> tuple[list[str], list[Any]]:
    conditions: list[str] = []
    parameters: list[Any] = []
    for field, value in (where or {}).items():
        check_field_name(field)
        if value is None:
            # Matches a JSON null and a missing field alike, as MongoDB's {field: null}.
            conditions.append(f"{_extract(field)} IS NULL")
            continue
        types = _json_types(value, exact_bool=True)
        conditions.append(f"{_extract(field)} = ?")
        conditions.append(f"{_json_type(field)} {types}")
        parameters.append(value)
    if before is not None:
        field, value = before
        check_field_name(field)
        if value is None:
            raise ValueError(f"before: no value is less than None (field {field!r})")
        types = _json_types(value, exact_bool=False)
        conditions.append(f"{_extract(field)} < ?")
        conditions.append(f"{_json_type(field)} {types}")
        parameters.append(value)
    return conditions, parameters


def _where_clause(conditions: Iterable[str]) -> str:
    joined = " AND ".join(conditions)
    return f" WHERE {joined}" if joined else ""


def _index_statement(table: str, fields: tuple[str, ...]) -> str:
    if not fields:
        raise ValueError(f"{table}: an index needs at least one field")
    for field in fields:
        check_field_name(field)
    # ':' and ',' cannot occur in collection or field names: distinct indexes never share
    # a name, and the same fields always get the same one (IF NOT EXISTS stays idempotent).
    name = f"{table}:{','.join(fields)}"
    # id last: find() breaks ties by id, so the index alone yields the full order.
    columns = ", ".join([*(_extract(field) for field in fields), "id"])
    return f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ({columns})'


# -- execution helpers -----------------------------------------------------------------


def _create_table(connection: sqlite3.Connection, table: str) -> None:
    connection.execute(
        f'CREATE TABLE IF NOT EXISTS "{table}" '
        "(id TEXT PRIMARY KEY, rev INTEGER NOT NULL, body TEXT NOT NULL)"
    )
    connection.execute(
        f"INSERT INTO {REGISTRY} (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (table,)
    )


def _is_missing_table(exc: sqlite3.OperationalError) -> bool:
    return str(exc).startswith("no such table")


def _creating_if_missing(connection: sqlite3.Connection, table: str, write: Callable[[], T]) -> T:
    """Run `write`; if the table does not exist yet, create it and run `write` again.

    Writes to a collection nobody ensured must not be lost, and trying first keeps the
    common case free of DDL. The "no such table" error is raised while the statement is
    prepared, before any row is touched, so the retry cannot apply anything twice; and
    catching it here keeps it from failing the whole group transaction.
    """
    try:
        return write()
    except sqlite3.OperationalError as exc:
        if not _is_missing_table(exc):
            raise
    _create_table(connection, table)
    return write()


def _or_if_missing(
    read: Callable[[sqlite3.Connection], T], empty: Callable[[], T]
) -> Callable[[sqlite3.Connection], T]:
    """A read of a collection that was never created finds nothing rather than failing."""

    def run(connection: sqlite3.Connection) -> T:
        try:
            return read(connection)
        except sqlite3.OperationalError as exc:
            if _is_missing_table(exc):
                return empty()
            raise

    return run


def _no_rows() -> list[tuple[Any, ...]]:
    return []


def _encode(body: Body) -> str:
    if not isinstance(body, Mapping):
        raise TypeError(f"a document body must be a mapping, got {type(body).__name__}")
    if reserved := RESERVED_FIELDS.intersection(body):
        raise ValueError(f"document body fields {sorted(reserved)} are reserved")
    # NaN and Infinity are not JSON: SQLite's JSON functions would reject the stored text
    # at query time, failing every later query of the collection instead of this write.
    return _ENCODE(body)


# json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False), without
# building an encoder per call (bulk writes encode thousands of documents).
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _document(row: tuple[Any, ...]) -> Document:
    doc_id, rev, body = row
    return Document(id=doc_id, rev=rev, body=json.loads(body))
