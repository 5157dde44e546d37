"""Where the embedded stores live, as the `conveyor` command line finds them: one absolute
path, shown; never a new empty store for a command that only reads; a file this user cannot
write refused once, clearly, rather than retried forever."""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.embedded.sqlite import SqliteFileUnusable
from conveyor.embedded.sqlite_library import sqlite3
from conveyor.eventstore.port import NewEvent
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.readmodels.sqlite import SqliteReadModelStore

REPO = Path(__file__).resolve().parents[2]


def conveyor(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=cwd,
        env=environment | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_command_that_only_reads_does_not_create_an_empty_store(tmp_path: Path) -> None:
    for args in (("history", "o-1"), ("query", "order", "o-1")):
        result = conveyor(tmp_path, *args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("conveyor: error: ")
        looked = tmp_path / ".conveyor" / ("events.db" if args[0] == "history" else "readmodels.db")
        assert f"no SQLite database at {looked}" in lines[0]  # where it looked, absolute
        assert not (tmp_path / ".conveyor").exists()


async def test_a_command_names_the_absolute_path_of_the_store_it_uses(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    await (await SqliteEventStore(tmp_path / "data" / "events.db").open()).close()
    await (await SqliteReadModelStore(tmp_path / "data" / "rm.db").open()).close()
    env = {"CONVEYOR_EVENT_STORE": "data/events.db", "CONVEYOR_READ_STORE": "sqlite:///data/rm.db"}
    history = await asyncio.to_thread(conveyor, tmp_path, "history", "o-1", "--json", **env)
    assert history.returncode == 1  # no such order: but the store was found
    assert history.stderr.splitlines()[0] == (
        f"conveyor: event store SQLite at {tmp_path / 'data' / 'events.db'}"
    )
    query = await asyncio.to_thread(conveyor, tmp_path, "query", "order", "o-1", **env)
    assert query.stderr.splitlines()[0] == (
        f"conveyor: read store SQLite at {tmp_path / 'data' / 'rm.db'}"
    )


def test_an_in_memory_store_is_refused(tmp_path: Path) -> None:
    result = conveyor(tmp_path, "history", "o-1", CONVEYOR_EVENT_STORE=":memory:")
    assert result.returncode == 2
    assert "CONVEYOR_EVENT_STORE" in result.stderr
    assert "in-memory database cannot be shared" in result.stderr


# -- a file another user created --------------------------------------------------------


@pytest.fixture
def shared_directory() -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp_path is private to its owner)."""
    directory = Path(tempfile.mkdtemp(prefix="conveyor-perm-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        subprocess.run(["rm", "-rf", str(directory)], check=False)


def open_as_another_user(path: Path, read_only: bool) -> str:
    """Open the store in a process that cannot write `path`: a fork that became nobody when
    this runs as root (root writes any file; and the interpreter may sit where nobody can
    start it), else this user after taking the file's write bits away."""
    if os.geteuid() != 0:
        path.chmod(0o444)
    nobody = pwd.getpwnam("nobody")

    async def open_and_read() -> str:
        try:
            store = await SqliteEventStore(path, read_only=read_only).open()
        except SqliteFileUnusable as exc:
            return f"refused: {exc}"
        try:
            return f"read {await store.head_position()}"
        finally:
            await store.close()

    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child process)
        code = 1
        try:
            os.close(reading)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            os.write(writing, asyncio.run(open_and_read()).encode())
            code = 0
        except BaseException as exc:
            os.write(writing, f"child failed: {exc!r}".encode())
        finally:
            os._exit(code)
    os.close(writing)
    with os.fdopen(reading) as answer:
        said = answer.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, said
    return said


def test_a_file_another_user_created_is_refused_once_clearly(shared_directory: Path) -> None:
    path = shared_directory / "events.db"
    asyncio.run(create(path))
    answer = open_as_another_user(path, read_only=False)
    assert answer.startswith(f"refused: SQLite database {path} cannot be written by this user")
    assert "mode 644" in answer or "mode 444" in answer


def test_a_file_another_user_created_can_still_be_read(shared_directory: Path) -> None:
    path = shared_directory / "events.db"
    asyncio.run(create(path))
    # While its owner's workers have it open (a WAL file needs its -shm file: a reader
    # that cannot create one reads only beside them).
    workers = sqlite3.connect(path)
    try:
        workers.execute("SELECT count(*) FROM events").fetchone()
        assert open_as_another_user(path, read_only=True) == "read 1"
        assert open_as_another_user(path, read_only=False).startswith("refused: ")
    finally:
        workers.close()


async def create(path: Path) -> None:
    store = await SqliteEventStore(path).open()
    try:
        await store.append("s", 0, [NewEvent(uuid.uuid4(), "Happened", {}, datetime.now(UTC))])
    finally:
        await store.close()
    path.chmod(0o644)


def test_status_refuses_a_store_that_does_not_exist_and_says_where_it_looked(
    tmp_path: Path,
) -> None:
    result = conveyor(tmp_path, "status", CONVEYOR_EVENT_STORE="elsewhere/events.db")
    assert result.returncode == 2
    assert f"no SQLite database at {tmp_path / 'elsewhere' / 'events.db'}" in result.stderr
    assert not (tmp_path / "elsewhere").exists()
