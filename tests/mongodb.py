"""A MongoDB server for the tests, on the wire.

With CONVEYOR_TEST_MONGODB_URL set (GitHub CI sets it to a real `mongod` replica set), the
tests use that server. Otherwise the session starts SecantusDB, a MongoDB wire-protocol
server installed with the `dev` extra, in a process of its own (its own interpreter and
GIL, so it neither slows nor can hang the test process) on a free port, in memory, and
stops it when the session ends. Each test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from pymongo import MongoClient

from conveyor.readmodels.port import ReadModelStore
from conveyor.settings import Settings

MONGODB_URL_VARIABLE = "CONVEYOR_TEST_MONGODB_URL"
LISTENING = re.compile(r"listening on (\S+):(\d+)")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Loaded here, not in the forked child, where only async-signal-safe calls belong.
_LIBC = ctypes.CDLL(None) if sys.platform == "linux" else None


class SecantusServer:
    """`secantusd-py` on a port the OS picks (or `port`), in memory unless given a
    folder to keep its data in; `url` once it listens."""

    def __init__(
        self,
        log: Path,
        *,
        port: int = 0,
        storage: Path | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        self.log = log
        self.port = port
        self.storage = storage
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> SecantusServer:
        executable = shutil.which("secantusd-py", path=str(Path(sys.executable).parent))
        if executable is None:
            pytest.fail(
                f"secantusd-py is not installed and {MONGODB_URL_VARIABLE} is not set: "
                "install the dev extra (pip install -e '.[dev]'), or point the variable at "
                "a MongoDB server"
            )
        logged = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as output:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [
                    executable,
                    *("--port", str(self.port)),
                    *("--storage-path", str(self.storage or ":memory:")),
                    *self.options,
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if found := LISTENING.search(self.log.read_text(errors="replace"), logged):
                host, port = found.groups()
                self.port = int(port)
                self.url = f"mongodb://{host}:{port}/conveyor_test"
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"SecantusDB did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: the server crashes."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL: bounded whatever the server does."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, SIGKILL it when the test process dies, so a
    run that is killed (a watchdog, a CI timeout, Ctrl-C twice) leaves no server behind."""
    if _LIBC is not None and sys.platform == "linux":
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def with_database(url: str, database: str) -> str:
    """The same server and options, another database (the URL's path)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def mongodb_server() -> Iterator[str]:
    """The URL of the session's MongoDB server."""
    if url := os.environ.get(MONGODB_URL_VARIABLE):
        yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="conveyor-secantus-"))
    server = SecantusServer(folder / "secantusd.log").start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def mongodb_url(mongodb_server: str) -> Iterator[str]:
    """A URL to a fresh database on the session's server, dropped after the test."""
    database = f"conveyor_test_{uuid.uuid4().hex[:12]}"
    yield with_database(mongodb_server, database)
    with (
        contextlib.suppress(Exception),
        MongoClient(mongodb_server, serverSelectionTimeoutMS=5000) as client,
    ):
        client.drop_database(database)


READ_STORES = ("sqlite", "mongodb")


def on_read_store(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """`settings` on the read store a parametrized fixture asks for (SQLite by default)."""
    if getattr(request, "param", "sqlite") == "mongodb":
        return settings.model_copy(update={"read_store": request.getfixturevalue("mongodb_url")})
    return settings


@pytest.fixture(params=READ_STORES)
async def read_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ReadModelStore]:
    """Each read-store adapter in turn, open on a store of its own: for the contract suite
    and every test that must hold on both."""
    store: ReadModelStore
    if request.param == "sqlite":
        from conveyor.readmodels.sqlite import SqliteReadModelStore

        store = await SqliteReadModelStore(tmp_path / "read.db").open()
    else:
        from conveyor.readmodels.mongodb import MongoReadModelStore

        store = await MongoReadModelStore(request.getfixturevalue("mongodb_url")).open()
    try:
        yield store
    finally:
        await store.close()
