"""A SQLite database file used from asyncio: one writer with group commit, a reader pool.

Writes are functions run on a single writer thread. Every write that arrives while the
previous transaction is being written waits, and the waiting ones then run together in the
next transaction — one fsync for the group instead of one per write. Each write runs under
its own SAVEPOINT: if it raises, only its own changes are undone and the exception goes back
to its caller, while the rest of the group commits; if its error made SQLite roll back the
whole transaction, it fails alone and the others run again without it. A failure of the
transaction itself (lock timeout, I/O error, full disk at commit) fails the whole group
with the adapter's "unavailable" error, which callers treat as transient. Should the writer
ever stop, its transaction is rolled back and every write waiting for it, or arriving
later, fails at once: nothing waits forever, and no lock is left held.

Reads run on a small thread pool, each thread with its own connection; WAL mode lets them
proceed while a write is under way, in this process or another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from conveyor.embedded.sqlite_library import (
    AFFECTED_VERSIONS,
    has_wal_reset_bug,
    linked_version,
    sqlite3,
)

T = TypeVar("T")

Operation = Callable[[sqlite3.Connection], T]

log = logging.getLogger("conveyor.sqlite")

JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
"""Bytes the WAL file is cut back to once checkpointed: without a limit it keeps the size
of its largest spike (a rebuild, a backlog) for good."""


class SqliteFileUnusable(Exception):
    """The database file cannot be used as asked, and retrying will not change that: it is
    read-only for this user, missing where a command that only reads looked for it, not a
    file, or the SQLite library linked has the WAL-reset bug."""


class SqliteFileMissing(SqliteFileUnusable):
    """No database where a command that only reads looked for it."""


def _is_busy(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and (
        "locked" in str(error) or "busy" in str(error)
    )


def _is_read_only(error: BaseException) -> bool:
    return isinstance(error, sqlite3.Error) and (
        str(getattr(error, "sqlite_errorname", "")).startswith("SQLITE_READONLY")
        or "readonly database" in str(error)
    )


@dataclass(slots=True)
class _Write(Generic[T]):
    operation: Operation[T]
    future: asyncio.Future[T]


@dataclass(frozen=True, slots=True)
class _Doomed:
    """A write whose error rolled back the whole transaction (SQLite does for some errors):
    the writes with it must be tried again without it."""

    index: int
    error: BaseException


_STOP = object()

Outcome = tuple[bool, Any]


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
        journal_size_limit: int = JOURNAL_SIZE_LIMIT,
        read_only: bool = False,
        allow_affected_sqlite: bool = False,
    ) -> None:
        self.path = Path(path)
        self._schema = schema
        self._unavailable = unavailable
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._max_group = max_group
        self._journal_size_limit = journal_size_limit
        self._read_only = read_only
        self._allow_affected_sqlite = allow_affected_sqlite
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._writer_connection: sqlite3.Connection | None = None
        self._queue: asyncio.Queue[_Write[Any] | object] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._closing = False
        self._gone: str | None = None
        """Why writes can no longer be made (closed, or the writer stopped), once so."""
        self.groups_committed = 0
        """How many transactions carried the writes so far (group commit at work)."""

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._writer_connection = await loop.run_in_executor(self._writer, self._open_writer)
        except SqliteFileUnusable:
            await self.close()
            raise
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise self._unavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        self._queue = asyncio.Queue()
        self._writer_task = asyncio.create_task(
            self._write_loop(), name=f"sqlite-writer:{self.path}"
        )

    async def close(self) -> None:
        self._closing = True  # writes arriving from now on fail at once instead of hanging
        task = self._writer_task
        if task is not None and self._queue is not None:
            if not task.done():
                self._queue.put_nowait(_STOP)
            # Not `await task`: cancelling this close() would cancel the writer in the
            # middle of a group. The writer finishes its group, fails what is queued behind
            # the stop, and only then do the connections go.
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # retrieved: reported to the writes already, not logged
            self._writer_task = None
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
        # Per connection, not stored in the file: whichever connection restarts the WAL
        # after a checkpoint cuts it back.
        connection.execute(f"PRAGMA journal_size_limit = {int(self._journal_size_limit)}")
        with self._connections_lock:
            self._connections.append(connection)
        return connection

    def _check_library(self) -> None:
        version = linked_version()
        if not has_wal_reset_bug(version):
            return
        problem = (
            f"the SQLite library linked is {version}, which has the WAL-reset bug "
            f"(affected: {AFFECTED_VERSIONS}): several processes sharing {self.path} can "
            "corrupt it or lose committed writes"
        )
        if not self._allow_affected_sqlite:
            raise SqliteFileUnusable(
                f"{problem}. Install a fixed SQLite (pip install 'pysqlite3>=0.6.1', which "
                "bundles one), or, if only one process ever opens the file, set "
                "CONVEYOR_SQLITE_ALLOW_AFFECTED_VERSION=true"
            )
        log.warning("%s; allowed by CONVEYOR_SQLITE_ALLOW_AFFECTED_VERSION", problem)

    def _open_writer(self) -> sqlite3.Connection:
        self._check_library()
        if self._read_only and not self.path.is_file():
            raise SqliteFileMissing(
                f"no SQLite database at {self.path}: this command only reads, so it did not "
                "create one (was the store configured, or the command started, elsewhere?)"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise OSError(f"{self.path.parent} exists and is not a directory") from None
        except PermissionError as exc:
            raise SqliteFileUnusable(self._permission_problem(exc)) from exc
        try:
            connection = self._connect()
            # Several processes opening a new file at once contend for the lock that
            # switching to WAL and creating the schema take, and the journal-mode switch
            # does not always wait on the busy handler: retry the set-up for a while rather
            # than refuse to start.
            for attempt in Retrying(
                retry=retry_if_exception(_is_busy),
                stop=stop_after_delay(max(30.0, self._busy_timeout)),
                wait=wait_random_exponential(multiplier=0.05, max=1.0),
                reraise=True,
            ):
                with attempt:
                    (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
                    connection.execute(f"PRAGMA synchronous = {self._synchronous}")
                    connection.executescript(self._schema)
                    if not self._read_only:
                        _prove_writable(connection)
            if str(mode).lower() != "wal":
                # Readers would block writers and the other way round, and several
                # processes would not see each other's writes the way they expect.
                raise SqliteFileUnusable(
                    f"SQLite database {self.path} stays in journal mode {mode!r}, not WAL "
                    "(an in-memory database, or a file system without shared memory?)"
                )
        except sqlite3.Error as exc:
            if _is_read_only(exc) or (
                "unable to open" in str(exc) and not os.access(self.path.parent, os.W_OK)
            ):
                raise SqliteFileUnusable(self._permission_problem(exc)) from exc
            raise
        return connection

    def _permission_problem(self, error: BaseException) -> str:
        owner = ""
        with contextlib.suppress(OSError):
            stat = self.path.stat()
            owner = f" (the file belongs to uid {stat.st_uid}, mode {stat.st_mode & 0o777:o})"
        return (
            f"SQLite database {self.path} cannot be written by this user{_uid()}"
            f"{owner}: {error}. Run as the user that owns it, or give this user write access "
            "to the file, its directory and its -wal and -shm files"
        )

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            connection.execute("PRAGMA query_only = 1")
            self._local.connection = connection
        return connection

    # -- reads -------------------------------------------------------------------------

    async def read(self, operation: Operation[T]) -> T:
        if self._gone is not None and not self._closing:
            # The writer stopped: the store is out of order, and its health check says so.
            raise self._unavailable(self._gone)

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
        if self._gone is not None:
            raise self._unavailable(self._gone)
        if self._queue is None or self._closing:
            raise self._unavailable(f"SQLite database {self.path} is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(operation, future))
        return await future

    async def _write_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        group: list[_Write[Any]] = []
        gone = f"SQLite database {self.path} was closed"
        try:
            while True:
                first = await self._queue.get()
                if first is _STOP:
                    return
                group = [first]  # type: ignore[list-item]
                stopping = False
                while len(group) < self._max_group and not self._queue.empty():
                    item = self._queue.get_nowait()
                    if item is _STOP:
                        stopping = True
                        break
                    group.append(item)  # type: ignore[arg-type]
                # A caller that gave up before its write started must not find it made
                # later (a failed rebuild's cancelled batches, after its leases were let go).
                group = [write for write in group if not write.future.done()]
                if not group:
                    if stopping:
                        return
                    continue
                try:
                    outcomes = await loop.run_in_executor(self._writer, self._write_group, group)
                except Exception as exc:  # the loop must outlive any single failure
                    outcomes = [(False, self._failure(exc))] * len(group)
                for write, (ok, value) in zip(group, outcomes, strict=True):
                    if write.future.done():  # the caller gave up (cancelled)
                        continue
                    if ok:
                        write.future.set_result(value)
                    else:
                        write.future.set_exception(value)
                group = []
                if stopping:
                    return
        except BaseException as exc:
            gone = f"SQLite database {self.path}: the writer stopped ({exc!r})"
            raise
        finally:
            # Whatever ended the loop, nothing is left waiting for it and nothing new waits.
            self._gone = gone
            failure = self._unavailable(gone)
            leftovers = [*group]
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if isinstance(item, _Write):
                    leftovers.append(item)
            for write in leftovers:
                if not write.future.done():
                    write.future.set_exception(failure)

    def _failure(self, error: BaseException, doing: str = "") -> Exception:
        if _is_read_only(error):
            return SqliteFileUnusable(self._permission_problem(error))
        failure = self._unavailable(f"SQLite database {self.path}{doing}: {error}")
        failure.__cause__ = error
        return failure

    def _write_group(self, group: list[_Write[Any]]) -> list[Outcome]:
        """One transaction for the group; a write whose error rolled the transaction back
        fails alone, and the others go again in a new one."""
        outcomes: list[Outcome | None] = [None] * len(group)
        remaining = list(range(len(group)))
        while remaining:
            result = self._transaction([group[index] for index in remaining])
            if isinstance(result, _Doomed):
                culprit = remaining.pop(result.index)
                error = result.error
                outcomes[culprit] = (
                    False,
                    error if _own_error(error) else self._failure(error),
                )
                continue
            for index, outcome in zip(remaining, result, strict=True):
                outcomes[index] = outcome
            break
        return [outcome for outcome in outcomes if outcome is not None]

    def _transaction(self, writes: list[_Write[Any]]) -> list[Outcome] | _Doomed:
        connection = self._writer_connection
        assert connection is not None
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(False, self._failure(exc, " is unavailable"))] * len(writes)
        committed = False
        try:
            outcomes: list[Outcome] = []
            for index, write in enumerate(writes):
                connection.execute("SAVEPOINT one_write")
                try:
                    result = write.operation(connection)
                except Exception as error:
                    if not connection.in_transaction:
                        return _Doomed(index, error)  # SQLite rolled everything back
                    try:
                        connection.execute("ROLLBACK TO one_write")
                        connection.execute("RELEASE one_write")
                    except sqlite3.Error:
                        return _Doomed(index, error)
                    outcomes.append((False, error if _own_error(error) else self._failure(error)))
                else:
                    connection.execute("RELEASE one_write")
                    outcomes.append((True, result))
            connection.execute("COMMIT")
            committed = True
            self.groups_committed += 1
            return outcomes
        except sqlite3.Error as exc:
            return [(False, self._failure(exc, " failed to commit"))] * len(writes)
        finally:
            if not committed and connection.in_transaction:
                # Also on a BaseException: an open BEGIN IMMEDIATE locks out every process.
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")


def _prove_writable(connection: sqlite3.Connection) -> None:
    """Fail now, not at the first write (where no retry could succeed), if this connection
    cannot write the file. BEGIN IMMEDIATE alone succeeds on a read-only connection while
    another process has the WAL open; rewriting a header field, then rolling back, does not."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        connection.execute(f"PRAGMA user_version = {int(version)}")
    finally:
        connection.execute("ROLLBACK")


def _uid() -> str:
    getuid = getattr(os, "getuid", None)  # POSIX only
    return f" (uid {getuid()})" if getuid is not None else ""


def _own_error(error: BaseException) -> bool:
    """An error that is the write's own answer (a broken rule, a constraint), raised to its
    caller as it is; any other database error reads as the store being unavailable."""
    return not isinstance(error, sqlite3.DatabaseError) or isinstance(error, sqlite3.IntegrityError)


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
        read_only: bool = False,
        allow_affected_sqlite: bool = False,
    ) -> None:
        """`read_only`: for a command that only reads — a missing file is refused rather
        than created, and the file need not be writable by this user."""
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
            read_only=read_only,
            allow_affected_sqlite=allow_affected_sqlite,
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
