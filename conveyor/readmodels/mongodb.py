"""The MongoDB adapter of the read-model store port, on PyMongo's asyncio client.

A document is stored as `{_id: <id>, _rev: <revision>, **body}`: the revision sits in the
same document as the body, so a compare-and-set is one single-document write filtered on
`{_id, _rev}`, which MongoDB applies atomically. Collections map one to one onto MongoDB
collections of the database named in the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote_plus

import pymongo
from bson.errors import InvalidDocument
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReadPreference, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from conveyor.eventstore.serialization import redact_url
from conveyor.readmodels.port import (
    COLLECTION_NAME,
    Body,
    Document,
    DocumentRejected,
    ReadStoreUnavailable,
    RevisionConflict,
    check_collection_name,
)

MongoDocument = dict[str, Any]
T = TypeVar("T")

FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_FIELDS = frozenset({"_id", "_rev"})

# Bounded requests: a rebuild's page of documents goes out in several round trips rather
# than as one message that could approach the server's 48 MB batch limit.
_BULK_BATCH = 1000
_IDS_PER_QUERY = 1000

# Server error codes that mean "not now" rather than "not this": a primary stepping down or
# shutting down, an unreachable host, a time limit, a majority read not possible yet (the
# retryable-writes spec's list, which pymongo keeps privately in helpers_shared.py).
_TRANSIENT_CODES = frozenset(
    {6, 7, 89, 91, 134, 189, 262, 9001, 10058, 10107, 11600, 11602, 13435, 13436}
)
_NAMESPACE_EXISTS = 48
# "Not this document, ever": BSONObjectTooLarge, the update/insert size limits,
# DocumentValidationFailure (a collection validator).
_REJECTED_CODES = frozenset({10334, 17419, 17420, 121})


def check_field_name(name: str) -> str:
    if not isinstance(name, str) or not FIELD_NAME.match(name):
        raise ValueError(f"field name {name!r} must match {FIELD_NAME.pattern}")
    return name


def database_name(url: str) -> str:
    """The database named in the URL's path, read the way PyMongo reads it."""
    _, _, rest = url.partition("://")
    host_and_path = rest.partition("?")[0]
    name = unquote_plus(host_and_path.partition("/")[2]).partition(".")[0]
    if not name:
        raise ValueError(
            f"MongoDB URL {redact_url(url)} names no database: add it as the path, "
            "e.g. mongodb://localhost:27017/conveyor"
        )
    return name


CLOSE_TIMEOUT_SECONDS = 2.0
"""How long close() may wait to end the client's server sessions: a server that is gone
must not hold a stopping worker for PyMongo's 30 s of server selection."""


class MongoReadModelStore:
    def __init__(
        self,
        url: str,
        *,
        operation_timeout: float = 20.0,
    ) -> None:
        if not url.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError(f"not a MongoDB URL: {redact_url(url)}")
        self._url = url
        self._redacted_url = redact_url(url)
        self.database_name = database_name(url)
        self._operation_timeout = operation_timeout
        self._client: AsyncMongoClient[MongoDocument] | None = None
        self._database: AsyncDatabase[MongoDocument] | None = None
        self._primary: AsyncDatabase[MongoDocument] | None = None

    def __repr__(self) -> str:
        return f"MongoReadModelStore({self._redacted_url!r})"

    def client_options(self) -> dict[str, Any]:
        """Our defaults, each only where the URL does not set it: keyword options override
        the URL's (mongo_client.py, _validate_kwargs_and_update_opts), so an operator's
        URL setting must win by our leaving the keyword out."""
        given = {key.lower() for key, _ in parse_qsl(self._url.partition("?")[2])}
        defaults: dict[str, Any] = {
            # Without it the server's default decides, and w:1 (an arbiter in the set, an
            # older server, setDefaultRWConcern) acknowledges a write that a failover rolls
            # back: the projection would ack its message and lose that update for good.
            "w": "majority",
            # A bound on every operation, sent to the server as maxTimeMS too: PyMongo has
            # no socket timeout by default, and a server that stops answering would hold
            # a projection worker's call forever. While it is set, PyMongo also waits for
            # a server (and a retryable write for a new primary) for what remains of it,
            # not serverSelectionTimeoutMS: 20 s rides out a replica set's election
            # (electionTimeoutMillis 10 s, then the vote) within one call.
            "timeoutMS": int(self._operation_timeout * 1000),
            "appname": "conveyor",
        }
        return {key: value for key, value in defaults.items() if key.lower() not in given}

    async def open(self) -> MongoReadModelStore:
        if self._client is not None:
            return self
        try:
            # Parses and validates the URL; an asyncio client does no I/O until first used.
            client: AsyncMongoClient[MongoDocument] = AsyncMongoClient(
                self._url, **self.client_options()
            )
        except (ConfigurationError, ValueError) as exc:
            # Its messages can quote the URL, password included.
            raise ValueError(
                f"MongoDB URL {self._redacted_url}: "
                f"{str(exc).replace(self._url, self._redacted_url)}"
            ) from None
        database = client.get_database(self.database_name)
        try:
            await self._ping(database)
        except BaseException:
            with contextlib.suppress(Exception):
                await client.close()
            raise
        self._client, self._database = client, database
        # Reads by id are the projections' guards, the collection pointers, the leases
        # and a rebuild's reads of its own writes: a secondary can serve them stale, and a
        # stale guard re-applies or skips an event. The URL's readPreference applies only
        # to queries over many documents (find, count).
        self._primary = database.with_options(read_preference=ReadPreference.PRIMARY)
        return self

    async def close(self) -> None:
        client, self._client = self._client, None
        self._database = self._primary = None
        if client is not None:
            # endSessions waits for a server up to serverSelectionTimeoutMS (30 s): the
            # client-side operation timeout bounds that wait (close() applies no timeoutMS).
            with contextlib.suppress(PyMongoError), pymongo.timeout(CLOSE_TIMEOUT_SECONDS):
                await client.close()

    async def ping(self) -> None:
        await self._ping(self._db)

    async def server_time(self) -> float:
        # The primary's clock: it is the member every lease write goes to.
        hello = await self._run(lambda: self._db.command("hello"))
        local_time: datetime = hello["localTime"]  # naive UTC, millisecond precision
        return local_time.replace(tzinfo=UTC).timestamp()

    async def _ping(self, database: AsyncDatabase[MongoDocument]) -> None:
        try:
            # A real round trip: the client connects lazily and would say nothing otherwise.
            await database.command("ping")
        except PyMongoError as exc:
            # Anything from a ping (a refused login too) means the store cannot serve us.
            raise self._unavailable(exc) from exc

    # -- collections -------------------------------------------------------------------

    async def ensure_collection(
        self, collection: str, indexes: Sequence[tuple[str, ...]] = ()
    ) -> None:
        coll = self._collection(collection)
        keys = [_index_keys(collection, fields) for fields in indexes]

        async def ensure() -> None:
            try:
                # Created explicitly: a collection without indexes must still exist (and
                # be listed) once ensured. No check_exists round trip: the server's answer
                # to a race is the same NamespaceExists either way.
                await self._db.create_collection(collection, check_exists=False)
            except OperationFailure as exc:
                if exc.code != _NAMESPACE_EXISTS:
                    raise
            for key in keys:
                # Idempotent on the server for the same keys and options.
                await coll.create_index(key)

        await self._run(ensure)

    async def drop_collection(self, collection: str) -> None:
        coll = self._collection(collection)
        await self._run(coll.drop)  # a missing collection is not an error (database.py)

    async def list_collections(self) -> list[str]:
        names = await self._run(self._db.list_collection_names)
        # system.* and other tools' collections cannot be ours: they fail the name pattern.
        return sorted(name for name in names if COLLECTION_NAME.match(name))

    # -- reads -------------------------------------------------------------------------

    async def get(self, collection: str, doc_id: str) -> Document | None:
        coll = self._collection(collection)
        found = await self._run(lambda: coll.find_one({"_id": doc_id}))
        return None if found is None else _document(found)

    async def get_many(self, collection: str, doc_ids: Sequence[str]) -> dict[str, Document]:
        coll = self._collection(collection)
        unique = list(dict.fromkeys(doc_ids))
        documents: dict[str, Document] = {}

        async def read(chunk: list[str]) -> list[MongoDocument]:
            async with coll.find({"_id": {"$in": chunk}}) as cursor:
                return await cursor.to_list()

        for start in range(0, len(unique), _IDS_PER_QUERY):
            chunk = unique[start : start + _IDS_PER_QUERY]
            for found in await self._run(functools.partial(read, chunk)):
                document = _document(found)
                documents[document.id] = document
        return documents

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
        coll = self._collection(collection, query=True)
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        query = _query(where, before)
        direction = DESCENDING if descending else ASCENDING
        sort = [("_id", direction)]
        if order_by is not None:
            sort.insert(0, (check_field_name(order_by), direction))
        if limit == 0:
            return []  # MongoDB reads a limit of 0 as "no limit"

        async def read() -> list[MongoDocument]:
            async with coll.find(query, sort=sort, limit=limit) as cursor:
                return await cursor.to_list()

        return [_document(document) for document in await self._run(read)]

    async def count(self, collection: str, *, where: Mapping[str, Any] | None = None) -> int:
        coll = self._collection(collection, query=True)
        query = _query(where, None)
        return await self._run(lambda: coll.count_documents(query))

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
        coll = self._collection(collection)
        if expected_rev < 0:
            raise ValueError(f"expected_rev must be >= 0, got {expected_rev}")
        _check_where_on_update(expected_rev, where)
        _check_body(body)
        # Run again after a lost connection, a write may find itself applied: as a
        # conflict, which the caller's guard then reads as a duplicate.
        if expected_rev == 0:
            try:
                await self._run(lambda: coll.insert_one({"_id": doc_id, "_rev": 1, **body}))
            except DuplicateKeyError:
                raise RevisionConflict(collection, doc_id, expected_rev) from None
            return 1
        result = await self._run(
            lambda: coll.replace_one(
                {**_query(where, None), "_id": doc_id, "_rev": expected_rev},
                {"_rev": expected_rev + 1, **body},
            )
        )
        if result.matched_count == 0:
            raise RevisionConflict(collection, doc_id, expected_rev)
        return expected_rev + 1

    async def put_many(self, collection: str, documents: Mapping[str, Body]) -> None:
        coll = self._collection(collection)
        for body in documents.values():
            _check_body(body)
        requests = [_upsert(doc_id, body) for doc_id, body in documents.items()]
        for start in range(0, len(requests), _BULK_BATCH):
            batch = requests[start : start + _BULK_BATCH]
            # Unordered: the server may apply a batch in parallel, and every upsert touches
            # a different document, so order carries no meaning.
            await self._run(functools.partial(coll.bulk_write, batch, ordered=False))

    # -- helpers -----------------------------------------------------------------------

    @property
    def _db(self) -> AsyncDatabase[MongoDocument]:
        """The database read from the primary (see open)."""
        if self._primary is None:
            raise ReadStoreUnavailable(f"MongoDB read store {self._redacted_url} is not open")
        return self._primary

    def _collection(
        self, collection: str, *, query: bool = False
    ) -> AsyncCollection[MongoDocument]:
        """The collection, read from the primary unless `query`: then as the URL says."""
        database = self._database if query else self._primary
        if database is None:
            raise ReadStoreUnavailable(f"MongoDB read store {self._redacted_url} is not open")
        return database[check_collection_name(collection)]

    async def _run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """`operation`, run again while the server is away, within the operation timeout.

        After a lost connection PyMongo pauses the server's pool and fails what is in
        flight at once ("connection pool paused"), and retries a read or write only once:
        a restart or an election of a few seconds would fail every call in flight, and
        each would spend a message's retry attempt. Waiting here turns it into a pause.
        """
        bound = self._bound()
        deadline = time.monotonic() + bound
        delay = 0.05
        with pymongo.timeout(bound):  # one budget for every attempt together
            while True:
                try:
                    return await operation()
                except InvalidDocument as exc:  # DocumentTooLarge too: refused before sending
                    raise DocumentRejected(f"MongoDB refuses the document: {exc}") from exc
                except ConnectionFailure as exc:
                    if exc.timeout or time.monotonic() + delay >= deadline:
                        raise self._unavailable(exc) from exc
                except PyMongoError as exc:
                    if _transient(exc):
                        raise self._unavailable(exc) from exc
                    if isinstance(exc, OperationFailure) and exc.code in _REJECTED_CODES:
                        raise DocumentRejected(f"MongoDB refuses the document: {exc}") from exc
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _bound(self) -> float:
        """The URL's timeoutMS, else ours; with timeoutMS=0 (none), server selection's."""
        if self._client is None:
            raise ReadStoreUnavailable(f"MongoDB read store {self._redacted_url} is not open")
        options = self._client.options
        return options.timeout or options.server_selection_timeout

    def _unavailable(self, exc: Exception) -> ReadStoreUnavailable:
        detail = (str(exc) or type(exc).__name__).replace(self._url, self._redacted_url)
        return ReadStoreUnavailable(f"MongoDB at {self._redacted_url} is unavailable: {detail}")


def _transient(exc: PyMongoError) -> bool:
    if isinstance(exc, ConnectionFailure) or exc.timeout:
        # ConnectionFailure covers AutoReconnect, NetworkTimeout, NotPrimaryError,
        # ServerSelectionTimeoutError and WaitQueueTimeoutError (errors.py).
        return True
    if exc.has_error_label("RetryableWriteError") or exc.has_error_label(
        "TransientTransactionError"
    ):
        return True
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors", []) + exc.details.get("writeConcernErrors", [])
        return bool(errors) and all(error.get("code") in _TRANSIENT_CODES for error in errors)
    return isinstance(exc, OperationFailure) and exc.code in _TRANSIENT_CODES


def _check_where_on_update(expected_rev: int, where: Mapping[str, Any] | None) -> None:
    if where and expected_rev == 0:
        raise ValueError("where applies to updates only: a new document has no fields yet")


def _check_body(body: Body) -> None:
    if not isinstance(body, Mapping):
        raise TypeError(f"a document body must be a mapping, got {type(body).__name__}")
    if reserved := RESERVED_FIELDS.intersection(body):
        raise ValueError(f"document body fields {sorted(reserved)} are reserved")


def _upsert(doc_id: str, body: Body) -> UpdateOne:
    # A pipeline update replaces the body and bumps the revision in one atomic write,
    # which neither a replacement (cannot increment) nor $set (keeps fields the new body
    # dropped) can. $literal stops strings like "$x" in the body from being read as field
    # paths. An upsert starts from {_id: doc_id}, where $_rev is missing: 0 + 1.
    return UpdateOne(
        {"_id": doc_id},
        [
            {
                "$replaceWith": {
                    "$mergeObjects": [
                        {"$literal": body},
                        {"_id": "$_id", "_rev": {"$add": [{"$ifNull": ["$_rev", 0]}, 1]}},
                    ]
                }
            }
        ],
        upsert=True,
    )


def _query(where: Mapping[str, Any] | None, before: tuple[str, Any] | None) -> MongoDocument:
    query: MongoDocument = {}
    for field, value in (where or {}).items():
        check_field_name(field)
        _check_value(value)
        # $eq: a value is compared, never read as an operator document.
        query[field] = {"$eq": value}
    if before is not None:
        field, value = before
        check_field_name(field)
        if value is None:
            raise ValueError(f"before: no value is less than None (field {field!r})")
        _check_value(value)
        query.setdefault(field, {})["$lt"] = value
    return query


def _check_value(value: Any) -> None:
    # The scalars both adapters compare alike (MongoDB brackets comparisons by type; the
    # SQLite adapter reproduces that for these).
    if value is not None and not isinstance(value, str | int | float | bool):
        raise TypeError(
            f"query values must be str, int, float, bool or None, got {type(value).__name__}"
        )


def _index_keys(collection: str, fields: tuple[str, ...]) -> list[tuple[str, int]]:
    if not fields:
        raise ValueError(f"{collection}: an index needs at least one field")
    # _id last: find() breaks ties by _id, so the index alone yields the full order.
    return [*((check_field_name(field), ASCENDING) for field in fields), ("_id", ASCENDING)]


def _document(stored: MongoDocument) -> Document:
    body = dict(stored)
    doc_id = body.pop("_id")
    rev = body.pop("_rev")
    return Document(id=doc_id, rev=rev, body=body)
