from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from conveyor.settings import Settings
from eventstore.sqlite import SqliteEventStore
from workers.host import WorkerHost


@pytest.fixture
def settings(amqp_url: str, tmp_path: Path) -> Settings:
    """Settings of a worker with its own command queue and event-store file."""
    return Settings(
        amqp_url=amqp_url,
        event_store=str(tmp_path / "events.db"),
        command_queue=f"orders.commands.{uuid.uuid4().hex[:8]}",
        retry_delays=(0.2, 0.4),
        max_attempts=3,
        sqlite_busy_timeout=0.2,
        shutdown_timeout=5,
    )


@pytest.fixture
async def start_worker() -> AsyncIterator[Callable[[Settings], Awaitable[WorkerHost]]]:
    hosts: list[WorkerHost] = []

    async def start(settings: Settings) -> WorkerHost:
        host = WorkerHost(settings)
        await host.start()
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        await host.stop()


@pytest.fixture
async def reader(settings: Settings) -> AsyncIterator[SqliteEventStore]:
    """A second connection to the worker's event store, as another process would open it."""
    store = await SqliteEventStore(settings.event_store).open()
    yield store
    await store.close()
