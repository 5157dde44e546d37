"""Worker processes as an operator runs them: `python -m conveyor run`, several at once,
killed with SIGKILL, stopped with SIGTERM, and across a broker restart."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.settings import Settings
from tests.processes import start_conveyor
from tests.rabbit import eventually, publish_many, queue_depth

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


class WorkerProcesses:
    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"worker-{len(self.processes)}.log"
        process = start_conveyor(
            self.settings,
            "commands",
            log,
            CONVEYOR_PREFETCH="50",
            CONVEYOR_RETRY_DELAYS="0.2,0.5",
        )
        process.log = log  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    async def started(self, process: subprocess.Popen[bytes]) -> None:
        log: Path = process.log  # type: ignore[attr-defined]
        await eventually(
            lambda: process.poll() is not None or "worker started" in log.read_text(),
            within=30,
            what="the worker to start",
        )
        assert process.poll() is None, log.read_text()

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcesses]:
    processes = WorkerProcesses(settings, tmp_path)
    yield processes
    processes.stop_all()


def workload(orders: int, items_on: list[str], items: int) -> list[dict[str, Any]]:
    """Commands whose effects do not depend on their order: new orders, and items added
    to orders created beforehand."""
    commands = [
        {
            "type": "CreateOrder",
            "command_id": str(uuid.uuid4()),
            "order_id": f"new-{n}",
            "customer_id": "c",
        }
        for n in range(orders)
    ]
    commands += [
        {
            "type": "AddItem",
            "command_id": str(uuid.uuid4()),
            "order_id": order_id,
            "sku": f"SKU-{n}",
            "quantity": 1,
            "unit_price": "2.50",
        }
        for order_id in items_on
        for n in range(items)
    ]
    return commands


async def applied_command_ids(store: SqliteEventStore) -> Counter[str]:
    counts: Counter[str] = Counter()
    position = 0
    while page := await store.read_all(after=position, limit=5000):
        counts.update(e.metadata["command_id"] for e in page)
        position = page[-1].position
    return counts


async def test_workers_killed_mid_batch_lose_no_command_and_apply_none_twice(
    settings: Settings, workers: WorkerProcesses, reader: SqliteEventStore, amqp_url: str
) -> None:
    first, second = workers.start(), workers.start()  # two competing consumers
    await workers.started(first)
    await workers.started(second)
    setup = [
        {
            "type": "CreateOrder",
            "command_id": f"setup-{n}",
            "order_id": f"busy-{n}",
            "customer_id": "c",
        }
        for n in range(5)
    ]
    await publish_many(amqp_url, settings.command_queue, setup)
    await eventually(lambda: _count_at_least(reader, 5), what="setup orders")

    commands = workload(1500, [f"busy-{n}" for n in range(5)], 60)
    await publish_many(amqp_url, settings.command_queue, commands)

    # Kill a worker while messages are in flight, twice, starting a replacement each time.
    for step, target in enumerate((first, second), start=1):
        await eventually(
            lambda step=step: _count_at_least(reader, 5 + step * len(commands) // 6),
            within=60,
            what="progress",
        )
        target.send_signal(signal.SIGKILL)
        target.wait()
        done_at_kill = await reader.head_position()
        assert done_at_kill < 5 + len(commands), "the kill came too late to prove anything"
        replacement = workers.start()
        await workers.started(replacement)

    expected = {c["command_id"] for c in commands + setup}
    await eventually(
        lambda: _count_at_least(reader, len(expected)), within=120, what="all commands"
    )
    await asyncio.sleep(1)  # let any straggling redelivery land, so duplicates would show
    applied = await applied_command_ids(reader)
    assert set(applied) == expected
    assert [cid for cid, n in applied.items() if n != 1] == []
    assert await queue_depth(amqp_url, settings.command_queue) == 0
    assert await queue_depth(amqp_url, f"{settings.command_queue}.dlq") == 0


async def _count_at_least(store: SqliteEventStore, count: int) -> bool:
    return await store.head_position() >= count


async def test_sigterm_finishes_in_flight_work_and_exits_cleanly(
    settings: Settings, workers: WorkerProcesses, reader: SqliteEventStore, amqp_url: str
) -> None:
    worker = workers.start()
    await workers.started(worker)
    commands = workload(400, [], 0)
    await publish_many(amqp_url, settings.command_queue, commands)
    await eventually(lambda: _count_at_least(reader, 50), what="progress")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    log = worker.log.read_text()  # type: ignore[attr-defined]
    assert "worker stopped" in log
    assert "Traceback" not in log

    restarted = workers.start()
    await workers.started(restarted)
    await eventually(lambda: _count_at_least(reader, len(commands)), within=60)
    applied = await applied_command_ids(reader)
    assert set(applied) == {c["command_id"] for c in commands}
    assert max(applied.values()) == 1


@pytest.mark.exclusive
@pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None, reason="restarting the broker needs a local rabbitmqctl"
)
async def test_a_worker_recovers_by_itself_after_a_broker_restart(
    settings: Settings, workers: WorkerProcesses, reader: SqliteEventStore, amqp_url: str
) -> None:
    worker = workers.start()
    await workers.started(worker)
    before = workload(50, [], 0)
    await publish_many(amqp_url, settings.command_queue, before)
    await eventually(lambda: _count_at_least(reader, 50))

    for step in ("stop_app", "start_app"):
        subprocess.run(["rabbitmqctl", "-q", step], check=True, timeout=120)
    subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True, timeout=120)

    after = workload(50, [], 0)
    for command in after:
        command["order_id"] = "after-" + command["order_id"]
    # the broker may need a moment before it accepts publishes on the restored queue
    await eventually(
        lambda: _publish_ok(amqp_url, settings.command_queue, after), within=30, interval=1
    )
    await eventually(lambda: _count_at_least(reader, 100), within=60, what="post-restart commands")
    assert worker.poll() is None
    applied = await applied_command_ids(reader)
    assert set(applied) == {c["command_id"] for c in before + after}


async def _publish_ok(amqp_url: str, queue: str, commands: list[dict[str, Any]]) -> bool:
    try:
        await publish_many(amqp_url, queue, commands)
    except Exception:
        return False
    return True
