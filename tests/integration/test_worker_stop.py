"""Stopping a worker host is bounded, whatever the broker does.

A broker out of file handles accepts TCP connections and then never answers: not the AMQP
handshake, not a queue declaration, not a channel close. Two stand-ins reproduce that on
the wire: a listener that accepts and stays silent, and a proxy to the real broker that can
be frozen mid-conversation. Each test then checks what the test runner's own teardown
needs: stop() returns within shutdown_timeout plus STOP_MARGIN, and no task is left behind
that ignores its cancellation (asyncio's final `_cancel_all_tasks` would wait on it
forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from conveyor.settings import Settings
from tests.processes import conveyor_env
from tests.rabbit import eventually
from workers.host import STOP_MARGIN, WorkerHost

pytestmark = pytest.mark.rabbitmq


class FreezableProxy:
    """A TCP proxy to the broker that can stop forwarding, both ways, at any moment."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def freeze(self) -> None:
        self.flowing.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, upstream_writer]
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pump = asyncio.create_task(self._pump(source, sink))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while chunk := await source.read(65536):
                await self.flowing.wait()
                sink.write(chunk)
                await sink.drain()

    async def close(self) -> None:
        for pump in list(self._pumps):
            pump.cancel()
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def silent_amqp_url(settings: Settings) -> AsyncIterator[str]:
    """The URL of a listener that accepts connections and never says a word, like a broker
    out of file handles."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield with_port(settings.amqp_url, int(server.sockets[0].getsockname()[1]))
    server.close()


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{port}"))


async def assert_nothing_ignores_cancellation() -> None:
    """What asyncio.run does last: cancel every task and wait for them all."""
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in leftovers:
        task.cancel()
    if leftovers:
        _, pending = await asyncio.wait(leftovers, timeout=5)
        assert not pending, f"tasks that ignore cancellation: {pending}"


@pytest.fixture
async def proxy(settings: Settings) -> AsyncIterator[FreezableProxy]:
    parts = urlsplit(settings.amqp_url)
    proxy = FreezableProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    yield proxy
    await proxy.close()


async def test_stop_is_bounded_when_the_broker_stops_answering(
    settings: Settings, proxy: FreezableProxy
) -> None:
    port = await proxy.start()
    settings = settings.model_copy(
        update={"amqp_url": with_port(settings.amqp_url, port), "shutdown_timeout": 2.0}
    )
    host = WorkerHost(settings, ("commands", "gateway", "projections"))
    await host.start()
    proxy.freeze()  # from here on the broker receives nothing and answers nothing

    started = time.monotonic()
    await asyncio.wait_for(host.stop(), settings.shutdown_timeout + STOP_MARGIN + 1)
    assert time.monotonic() - started <= settings.shutdown_timeout + STOP_MARGIN
    assert host.store is None
    assert host.read_store is None
    await assert_nothing_ignores_cancellation()


async def test_a_start_cancelled_during_a_handshake_that_never_ends_leaves_nothing_behind(
    settings: Settings, silent_amqp_url: str
) -> None:
    settings = settings.model_copy(update={"amqp_url": silent_amqp_url, "amqp_connect_timeout": 60})
    host = WorkerHost(settings, ("commands",))
    starting = asyncio.create_task(host.start())
    await asyncio.sleep(0.5)  # inside the AMQP handshake the listener never answers
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(starting, settings.shutdown_timeout + STOP_MARGIN + 1)
    await assert_nothing_ignores_cancellation()


async def test_a_broker_that_never_answers_fails_the_start_within_the_connect_timeout(
    settings: Settings, silent_amqp_url: str
) -> None:
    settings = settings.model_copy(
        update={"amqp_url": silent_amqp_url, "amqp_connect_timeout": 1.0}
    )
    host = WorkerHost(settings, ("commands",))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(host.start(), 10)
    await assert_nothing_ignores_cancellation()


async def test_sigterm_while_the_broker_never_answers_stops_the_process(
    settings: Settings, silent_amqp_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "conveyor", "run", "--only", "commands"),
            env=conveyor_env(
                settings,
                CONVEYOR_AMQP_URL=silent_amqp_url,
                CONVEYOR_AMQP_CONNECT_TIMEOUT="120",
                CONVEYOR_SHUTDOWN_TIMEOUT="2",
            ),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        # The ops server is up: start() is now waiting in the handshake that never ends.
        await eventually(lambda: "metrics and health on" in log.read_text(), what="start")
        await asyncio.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 2 + STOP_MARGIN + 5)
        except TimeoutError:
            pytest.fail(f"SIGTERM did not stop a worker stuck in start:\n{log.read_text()}")
        assert "stopping while starting" in log.read_text()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
