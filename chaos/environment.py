"""One scenario's world: its own RabbitMQ vhost, its own SQLite files, and conveyor worker
processes started (and SIGKILLed) the way an operator runs them.

With CONVEYOR_READ_STORE set to a MongoDB URL, the read models go to a database of their
own on that server instead of a SQLite file, dropped when the scenario ends.

Every process is `python -m chaos.worker --only …`: `conveyor run` plus the fault-injection
hooks of chaos/worker.py, which stay off unless a scenario sets their CONVEYOR_CHAOS_*
variables.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika

from conveyor.bootstrap import MONGODB_SCHEMES
from conveyor.operations.management import VHOST_TIMEOUT, ManagementApi
from conveyor.settings import Settings
from messaging.cluster import connect_any

REPO = Path(__file__).resolve().parents[1]
AMQP_URL = os.environ.get("CONVEYOR_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MANAGEMENT_URL = os.environ.get(
    "CONVEYOR_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672/"
)

BASE_ENV = {
    "CONVEYOR_HTTP_PORT": "0",
    "CONVEYOR_OPS_PORT": "0",
    "CONVEYOR_PREFETCH": "50",
    "CONVEYOR_RETRY_DELAYS": "0.2,0.5,1,2",
    "CONVEYOR_MAX_ATTEMPTS": "6",
    "CONVEYOR_GATEWAY_LEASE_SECONDS": "2",
    "CONVEYOR_GATEWAY_POLL_INTERVAL": "0.05",
    "CONVEYOR_SQLITE_BUSY_TIMEOUT": "1",
    "CONVEYOR_SHUTDOWN_TIMEOUT": "5",
}


def vhost_url(vhost: str, base: str = AMQP_URL) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


async def _drop_database(url: str) -> None:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, timeoutMS=10_000)
    try:
        with contextlib.suppress(Exception):
            await client.drop_database(client.get_default_database().name)
    finally:
        await client.close()


def _open_log(path: Path) -> IO[bytes]:
    return path.open("ab")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@dataclass
class WorkerProcess:
    only: str
    log: Path
    process: asyncio.subprocess.Process
    started_at: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def log_text(self) -> str:
        return _read_text(self.log)


class Environment:
    """Vhost + files + processes of one scenario. Use `async with`."""

    def __init__(
        self,
        name: str,
        *,
        env: dict[str, str] | None = None,
        amqp_base: str = AMQP_URL,
        management_url: str = MANAGEMENT_URL,
    ) -> None:
        self.name = name
        self.extra_env = dict(env or {})
        self.vhost = f"conveyor-chaos-{uuid.uuid4().hex[:10]}"
        self.amqp_base = amqp_base
        # The harness's calls all get the long timeout vhost deletion needs.
        self.management = ManagementApi(management_url, self.vhost, timeout=VHOST_TIMEOUT)
        self.amqp_url = ""
        self.directory = Path()
        self.processes: list[WorkerProcess] = []
        self.keep_directory = False
        self.killed = 0
        self._started = 0
        self._mongodb_read_store = ""
        if (given := os.environ.get("CONVEYOR_READ_STORE", "")).startswith(MONGODB_SCHEMES):
            parts = urlsplit(given)
            database = f"{parts.path.strip('/') or 'conveyor'}_chaos_{uuid.uuid4().hex[:10]}"
            self._mongodb_read_store = urlunsplit(parts._replace(path=f"/{database}"))

    async def __aenter__(self) -> Environment:
        user = urlsplit(self.amqp_base).username or "guest"
        await self.management.create_vhost(self.vhost, user)
        self.amqp_url = vhost_url(self.vhost, self.amqp_base)
        self.directory = Path(tempfile.mkdtemp(prefix=f"conveyor-chaos-{self.name}-"))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop_all()
        with contextlib.suppress(Exception):
            assert self.vhost.startswith("conveyor-chaos-"), "only ever delete our own vhosts"
            await self.management.delete_vhost(self.vhost)
        await self.management.close()
        if self._mongodb_read_store and not self.keep_directory:
            await _drop_database(self._mongodb_read_store)
        if not self.keep_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- configuration -------------------------------------------------------------------

    @property
    def event_store(self) -> Path:
        return self.directory / "events.db"

    @property
    def read_store(self) -> str:
        return self._mongodb_read_store or str(self.directory / "readmodels.db")

    @property
    def fix_flag(self) -> Path:
        """Scenario 6's "fix": while this file is absent the injected faults are active."""
        return self.directory / "fixed"

    def environ(self) -> dict[str, str]:
        return {
            **os.environ,
            **BASE_ENV,
            "CONVEYOR_AMQP_URL": self.amqp_url,
            "CONVEYOR_EVENT_STORE": str(self.event_store),
            "CONVEYOR_READ_STORE": self.read_store,
            "CONVEYOR_COMMAND_QUEUE": "orders.commands",
            "CONVEYOR_PROJECTION_QUEUE_PREFIX": "projections",
            "CONVEYOR_CHAOS_FIXED_FLAG": str(self.fix_flag),
            **self.extra_env,
        }

    def settings(self) -> Settings:
        """The Settings the workers read from `environ()`."""
        env = self.environ()
        return Settings(
            amqp_url=env["CONVEYOR_AMQP_URL"],
            event_store=env["CONVEYOR_EVENT_STORE"],
            read_store=env["CONVEYOR_READ_STORE"],
            command_queue=env["CONVEYOR_COMMAND_QUEUE"],
            projection_queue_prefix=env["CONVEYOR_PROJECTION_QUEUE_PREFIX"],
            retry_delays=tuple(float(d) for d in env["CONVEYOR_RETRY_DELAYS"].split(",")),
            max_attempts=int(env["CONVEYOR_MAX_ATTEMPTS"]),
        )

    # -- processes -----------------------------------------------------------------------

    async def start(
        self, only: str, *, wait: bool = True, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        self._started += 1  # before any await: starts may run concurrently
        log = self.directory / f"{only.replace(',', '+')}-{self._started}.log"
        handle = _open_log(log)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "chaos.worker",
                "--only",
                only,
                cwd=REPO,
                env={**self.environ(), **(env or {})},
                stdout=handle,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            handle.close()
        worker = WorkerProcess(only, log, process)
        self.processes.append(worker)
        if wait:
            await self.started(worker)
        return worker

    async def started(self, worker: WorkerProcess, within: float = 60) -> None:
        await eventually(
            lambda: not worker.alive or "conveyor worker started" in worker.log_text(),
            within=within,
            what=f"{worker.only} worker to start",
        )
        if not worker.alive:
            raise RuntimeError(f"{worker.only} worker exited:\n{worker.log_text()[-3000:]}")

    async def kill(self, worker: WorkerProcess) -> None:
        """SIGKILL: no shutdown, no acks, no checkpoint saved."""
        if worker.alive:
            worker.process.send_signal(signal.SIGKILL)
            self.killed += 1
        await worker.process.wait()

    def running(self, only: str) -> list[WorkerProcess]:
        return [w for w in self.processes if w.only == only and w.alive]

    async def stop_all(self) -> None:
        for worker in self.processes:
            if worker.alive:
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.processes:
            try:
                await asyncio.wait_for(worker.process.wait(), 15)
            except TimeoutError:
                worker.process.kill()
                await worker.process.wait()

    def crashed(self) -> list[WorkerProcess]:
        """Processes that exited without being killed by the harness."""
        return [
            w
            for w in self.processes
            if w.process.returncode is not None and w.process.returncode != -signal.SIGKILL
        ]

    async def console_publish(self, message: Any) -> None:
        """Publish an Outgoing as the management console's "Publish message" on a queue does
        (see Outgoing): only the properties given (no generated message_id); `routed` is as
        close to a confirm as HTTP gets."""
        properties: dict[str, Any] = {"delivery_mode": 2, "headers": message.headers}
        if message.content_type:
            properties["content_type"] = message.content_type
        queue = "orders.commands"
        result = await self.management.request(
            "POST",
            f"/exchanges/{quote(self.vhost, safe='')}/amq.default/publish",
            json={
                "properties": properties,
                "routing_key": queue,
                "payload": base64.b64encode(message.body).decode(),
                "payload_encoding": "base64",
            },
        )
        if not result["routed"]:
            raise RuntimeError(f"message to {queue} was not routed")

    # -- broker state --------------------------------------------------------------------

    async def consumer_prefetch(self) -> dict[str, set[int]]:
        """Per queue, the prefetch limits its consumers have (0 = unlimited)."""
        consumers = await self.management.request("GET", f"/consumers/{quote(self.vhost, safe='')}")
        limits: dict[str, set[int]] = {}
        for consumer in consumers:
            queue = consumer.get("queue", {}).get("name", "?")
            limits.setdefault(queue, set()).add(int(consumer.get("prefetch_count") or 0))
        return limits

    async def peek(self, queue: str, count: int) -> list[dict[str, Any]]:
        """Messages of a queue, requeued afterwards (the console's "Get messages")."""
        result: list[dict[str, Any]] = await self.management.request(
            "POST",
            f"/queues/{quote(self.vhost, safe='')}/{quote(queue, safe='')}/get",
            json={
                "count": count,
                "ackmode": "ack_requeue_true",
                "encoding": "auto",
                "truncate": 200,
            },
        )
        return result

    async def queue_depths(self, names: list[str]) -> dict[str, int]:
        """Ready messages per queue, straight from the broker (the management API's numbers
        lag by its statistics interval)."""
        depths: dict[str, int] = {}
        for attempt in range(3):  # a broker busy with other work can miss one 10 s connect
            try:
                connection = await connect_any(self.amqp_url, timeout=10)
                break
            except TimeoutError:
                if attempt == 2:
                    raise
        async with connection:
            for name in names:
                channel = await connection.channel()
                try:
                    declared = await channel.declare_queue(name, passive=True)
                    depths[name] = declared.declaration_result.message_count or 0
                except aio_pika.exceptions.ChannelClosed:
                    depths[name] = 0
        return depths


async def eventually(
    check: Callable[[], Any | Awaitable[Any]],
    *,
    within: float = 30.0,
    interval: float = 0.1,
    what: str = "",
) -> Any:
    """Poll `check` (sync or async) until it returns a truthy value; TimeoutError after."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {within:g}s waiting for {what or check}: last {last!r}")
