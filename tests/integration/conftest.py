from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.settings import Settings
from workers.host import WorkerHost


@pytest.fixture
def settings(amqp_url: str, tmp_path: Path) -> Settings:
    """Settings of a worker with its own command queue and event-store file."""
    run = uuid.uuid4().hex[:8]
    return Settings(
        amqp_url=amqp_url,
        event_store=str(tmp_path / "events.db"),
        read_store=str(tmp_path / "readmodels.db"),
        command_queue=f"orders.commands.{run}",
        projection_queue_prefix=f"projections.{run}",
        process_manager_queue=f"fulfilment.events.{run}",
        http_port=0,
        ops_port=0,
        gateway_lease_seconds=2,
        gateway_poll_interval=0.05,
        retry_delays=(0.2, 0.4),
        max_attempts=3,
        sqlite_busy_timeout=0.2,
        shutdown_timeout=5,
    )


@pytest.fixture
async def start_worker() -> AsyncIterator[Callable[..., Awaitable[WorkerHost]]]:
    hosts: list[WorkerHost] = []

    async def start(settings: Settings, components: tuple[str, ...] = ("commands",)) -> WorkerHost:
        host = WorkerHost(settings, components)
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
