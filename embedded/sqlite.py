"""A SQLite database file used from asyncio: one writer with group commit, a reader pool.

Writes are functions run on a single writer thread. Every write that arrives while the
previous transaction is being written waits, and the waiting ones then run together in the
next transaction — one fsync for the group instead of one per write. Each write runs under
its own SAVEPOINT: if it raises, only its own changes are undone and the exception goes back
to its caller, while the rest of the group commits. A failure of the transaction itself
(lock timeout, I/O error, full disk) fails the whole group with the adapter's "unavailable"
error, which callers treat as transient.

Reads run on a small thread pool, each thread with its own connection; WAL mode lets them
proceed while a write is under way, in this process or another.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

T = TypeVar("T")

Operation = Callable[[sqlite3.Connection], T]


def _is_busy(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and (
        "locked" in str(error) or "busy" in str(error)
    )


@dataclass(slots=True)
class _Write(Generic[T]):
    operation: Operation[T]
    future: asyncio.Future[T]


_STOP = object()


def _group_failure(error: BaseException) -> bool:
    """Errors that doom the transaction rather than one write in it."""
    return isinstance(error, sqlite3.DatabaseError) and not isinstance(
        error, sqlite3.IntegrityError
    )


class SqliteDatabase:
    def __init__(
        self,
        path: str | Path,
        *,
        schema: str,
        unavailable: Callable[[str], Exception],
        busy_timeout: float = 5.0,
        synchronous: str = "FULL",
        readers: int = 4,
        max_group: int = 512,
    ) -> None:
        self.path = Path(path)
        self._schema = schema
        self._unavailable = unavailable
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._max_group = max_group
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._writer_connection: sqlite3.Connection | None = None
        self._queue: asyncio.Queue[_Write[Any] | object] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._closing = False
        self.groups_committed = 0
        """How many transactions carried the writes so far (group commit at work)."""

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._writer_connection = await loop.run_in_executor(self._writer, self._open_writer)
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise self._unavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        self._queue = asyncio.Queue()
        self._writer_task = asyncio.create_task(
            self._write_loop(), name=f"sqlite-writer:{self.path}"
        )

    async def close(self) -> None:
        self._closing = True  # writes arriving from now on fail at once instead of hanging
        if self._writer_task is not None and self._queue is not None:
            await self._queue.put(_STOP)
            await self._writer_task
            self._writer_task = None
            while not self._queue.empty():  # queued behind the stop: never to be written
                item = self._queue.get_nowait()
                if isinstance(item, _Write) and not item.future.done():
                    item.future.set_exception(
                        self._unavailable(f"SQLite database {self.path} was closed")
                    )
            self._queue = None
        # Threads first: closing a connection while a reader thread is inside a query on it
        # crashes the process (a segfault in sqlite3), not just that query.
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

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
        # Several processes opening a new file at once contend for the lock that switching
        # to WAL and creating the schema take, and the journal-mode switch does not always
        # wait on the busy handler: retry the set-up for a while rather than refuse to start.
        for attempt in Retrying(
            retry=retry_if_exception(_is_busy),
            stop=stop_after_delay(max(30.0, self._busy_timeout)),
            wait=wait_random_exponential(multiplier=0.05, max=1.0),
            reraise=True,
        ):
            with attempt:
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute(f"PRAGMA synchronous = {self._synchronous}")
                connection.executescript(self._schema)
        return connection

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            connection.execute("PRAGMA query_only = 1")
            self._local.connection = connection
        return connection

    # -- reads -------------------------------------------------------------------------

    async def read(self, operation: Operation[T]) -> T:
        def run() -> T:
            return operation(self._reader())

        try:
            return await asyncio.get_running_loop().run_in_executor(self._readers, run)
        except sqlite3.Error as exc:
            raise self._unavailable(f"SQLite database {self.path}: {exc}") from exc
        except RuntimeError as exc:  # the reader pool was shut down: the store is closed
            raise self._unavailable(f"SQLite database {self.path} is closed") from exc

    # -- writes (group commit) ---------------------------------------------------------

    async def write(self, operation: Operation[T]) -> T:
        """Run `operation` in the next group transaction; its exception, if any, is raised
        here and undoes only its own changes."""
        if self._queue is None or self._closing:
            raise self._unavailable(f"SQLite database {self.path} is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Write(operation, future))
        return await future

    async def _write_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is _STOP:
                return
            group: list[_Write[Any]] = [first]  # type: ignore[list-item]
            while len(group) < self._max_group and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is _STOP:
                    stopping = True
                    break
                group.append(item)  # type: ignore[arg-type]
            try:
                outcomes = await loop.run_in_executor(self._writer, self._write_group, group)
            except Exception as exc:  # the loop must outlive any single failure
                outcomes = [
                    (False, self._unavailable(f"SQLite database {self.path}: {exc}"))
                ] * len(group)
            for write, (ok, value) in zip(group, outcomes, strict=True):
                if write.future.done():  # the caller gave up (cancelled)
                    continue
                if ok:
                    write.future.set_result(value)
                else:
                    write.future.set_exception(value)

    def _write_group(self, group: list[_Write[Any]]) -> list[tuple[bool, Any]]:
        connection = self._writer_connection
        assert connection is not None
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            failure = self._unavailable(f"SQLite database {self.path} is unavailable: {exc}")
            return [(False, failure)] * len(group)
        outcomes: list[tuple[bool, Any]] = []
        try:
            for write in group:
                connection.execute("SAVEPOINT one_write")
                try:
                    result = write.operation(connection)
                except Exception as error:
                    if _group_failure(error):
                        raise
                    connection.execute("ROLLBACK TO one_write")
                    connection.execute("RELEASE one_write")
                    outcomes.append((False, error))
                else:
                    connection.execute("RELEASE one_write")
                    outcomes.append((True, result))
            connection.execute("COMMIT")
            self.groups_committed += 1
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            failure = self._unavailable(f"SQLite database {self.path} failed to commit: {exc}")
            return [(False, failure)] * len(group)
        return outcomes


class SqliteAdapter:
    """The life cycle every SQLite adapter shares: one database file, opened and closed.
    A subclass names its `schema` and the `unavailable` error its port defines."""

    schema: ClassVar[str]
    unavailable: ClassVar[Callable[[str], Exception]]

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 5.0,
        max_group: int = 512,
        readers: int = 4,
    ) -> None:
        self.path = Path(path)
        self._database = SqliteDatabase(
            path,
            schema=self.schema,
            unavailable=type(self).unavailable,
            busy_timeout=busy_timeout,
            # FULL: a write a caller was told about survives power loss, not just a crash
            # (an acknowledged message must never be left half-applied).
            synchronous="FULL",
            readers=readers,
            max_group=max_group,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @property
    def groups_committed(self) -> int:
        return self._database.groups_committed

    async def open(self) -> Self:
        await self._database.open()
        return self

    async def close(self) -> None:
        await self._database.close()
