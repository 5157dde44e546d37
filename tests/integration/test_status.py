"""`conveyor status` against the real broker: queue statistics, lag, and the exit code.

The management API refreshes queue statistics every few seconds, so each test first polls
the status in-process until the broker's numbers show what the test did, then runs the
command as a user does and checks its exit code and output.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conveyor.bootstrap import build_broker, declare_topology, open_event_store, open_read_store
from conveyor.operations.management import ManagementApi
from conveyor.operations.status import StatusReport, collect_status
from conveyor.readmodels.progress import ProgressWriter, read_progress
from conveyor.settings import Settings
from tests.integration.test_gateway import store_orders
from tests.processes import conveyor_env
from tests.rabbit import Management, eventually, publish
from workers.host import WorkerHost

pytestmark = pytest.mark.rabbitmq

StartWorker = Callable[..., Awaitable[WorkerHost]]


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    """conveyor_env plus the settings `conveyor status` and the lag tests change."""
    return conveyor_env(
        settings,
        **{
            "CONVEYOR_RETRY_DELAYS": ",".join(str(delay) for delay in settings.retry_delays),
            "CONVEYOR_STATUS_MAX_LAG_EVENTS": str(settings.status_max_lag_events),
            "CONVEYOR_STATUS_MAX_LAG_SECONDS": str(settings.status_max_lag_seconds),
            **extra,
        },
    )


async def conveyor_status(
    settings: Settings, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", "status", *args],
            env=environment(settings, **env),
            capture_output=True,
            text=True,
            timeout=30,
        )

    return await asyncio.to_thread(run)


async def status_once(settings: Settings) -> StatusReport:
    event_store = await open_event_store(settings)
    read_store = await open_read_store(settings)
    try:
        async with ManagementApi.from_settings(settings) as api:
            return await collect_status(settings, event_store, read_store, api)
    finally:
        await read_store.close()
        await event_store.close()


async def status_until(
    settings: Settings, check: Callable[[StatusReport], bool], what: str
) -> StatusReport:
    async def probe() -> StatusReport | None:
        report = await status_once(settings)
        return report if check(report) else None

    result: StatusReport = await eventually(probe, within=15, interval=0.25, what=what)
    return result


async def declare_queues(settings: Settings) -> None:
    """The topology and stores as workers leave them behind, with nobody consuming."""
    broker = build_broker(settings)
    async with broker:
        await broker.connect()
        await declare_topology(settings, broker, commands=True, events=True)
    await create_stores(settings)


async def create_stores(settings: Settings) -> None:
    """`conveyor status` only reads: it refuses a store that does not exist yet."""
    await (await open_event_store(settings)).close()
    await (await open_read_store(settings)).close()


def work_queues(document: dict[str, Any]) -> list[dict[str, Any]]:
    queues = document["queues"]
    return [queues["commands"]["work"], *(g["work"] for g in queues["projections"].values())]


async def test_healthy_when_every_worker_runs_and_has_caught_up(
    settings: Settings, start_worker: StartWorker
) -> None:
    stored = await store_orders(settings.event_store, 4)
    # Any free port for the worker's metrics: other tests' workers may hold the default.
    await start_worker(
        settings.model_copy(update={"ops_port": 0}), ("commands", "gateway", "projections")
    )

    def caught_up(report: StatusReport) -> bool:
        document = report.as_json()
        return (
            report.healthy
            and document["head_position"] == stored
            and document["gateway"]["events_behind"] == 0
            and all(p["events_behind"] == 0 for p in document["projections"].values())
            # the order projections have seen the whole log; stock_levels (no inventory
            # events here) has nothing to see and is not behind
            and all(
                p["position"] == stored
                for name, p in document["projections"].items()
                if name != "stock_levels"
            )
            and all(q["consumers"] == 1 for q in work_queues(document))
        )

    await status_until(settings, caught_up, "a healthy, caught-up status")

    result = await conveyor_status(settings, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["healthy"] is True
    assert document["exit_code"] == 0
    assert document["reasons"] == []
    # The broker's open-files limit, as this broker really has it: one warning line per node
    # below the production checklist's 50K (the system's broker here runs with 1024).
    nodes = Management().get("/nodes")
    low = [n["name"] for n in nodes if n["fd_total"] < 50_000]
    assert len(document["warnings"]) == len(low)
    for name, line in zip(low, document["warnings"], strict=True):
        assert f"RabbitMQ node {name} may open only" in line
        assert "fd_total" in line
        assert "ulimit -n" in line
    assert document["head_position"] == stored
    assert document["gateway"] | {"owner": None} == {
        "position": stored,
        "events_behind": 0,
        "events_behind_is_lower_bound": False,
        "seconds_behind": 0.0,
        "owner": None,
        "lease_active": True,
    }
    for name, projection in document["projections"].items():
        # stock_levels is sent no order event: nothing recorded, nothing behind
        assert projection["position"] == (None if name == "stock_levels" else stored), name
        assert projection["events_behind"] == 0, name
        assert projection["seconds_behind"] == 0.0, name
        assert projection["dead_letters"] == 0, name
    commands = document["queues"]["commands"]
    assert commands["work"]["name"] == settings.command_queue
    assert commands["dead_letters"]["name"] == f"{settings.command_queue}.dlq"
    assert [q["name"] for q in commands["retries"]] == [
        f"{settings.command_queue}.retry.200ms",
        f"{settings.command_queue}.retry.400ms",
    ]
    for queue in work_queues(document):
        assert queue["exists"] is True
        assert queue["consumers"] == 1
        assert {"ready", "unacked", "messages", "publish_rate", "deliver_rate"} <= queue.keys()
    assert document["sources"]["rabbitmq"].startswith("amqp://guest:***@")
    assert ":guest@" not in result.stdout

    screen = await conveyor_status(settings, COLUMNS="120")
    assert screen.returncode == 0, screen.stdout + screen.stderr
    assert screen.stdout.strip().splitlines()[-1] == "healthy"
    assert settings.command_queue in screen.stdout


async def test_unhealthy_without_consumers_and_with_dead_letters(settings: Settings) -> None:
    await declare_queues(settings)
    dead_letters = f"{settings.projection_queue_prefix}.order_summary.dlq"
    await publish(settings.amqp_url, dead_letters, {"not": "an event"})
    await status_until(
        settings, lambda report: report.dead_letters == 1, "the dead letter in the statistics"
    )

    result = await conveyor_status(settings, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["healthy"] is False
    assert document["exit_code"] == 1
    assert f"no consumer on {settings.command_queue}" in document["reasons"]
    assert f"1 message in {dead_letters}" in document["reasons"]
    assert document["dead_letters"] == 1
    assert document["projections"]["order_summary"]["dead_letters"] == 1

    screen = await conveyor_status(settings, **{"COLUMNS": "200"})
    assert screen.returncode == 1
    verdict = screen.stdout.strip().splitlines()[-1]
    assert verdict.startswith(f"unhealthy: no consumer on {settings.command_queue}; ")
    assert f"1 message in {dead_letters}" in verdict


async def test_a_store_that_does_not_answer_is_reported_with_the_pause_not_a_crash(
    settings: Settings,
) -> None:
    await declare_queues(settings)
    event_store = await open_event_store(settings)
    read_store = await open_read_store(settings)
    await event_store.close()  # from now on every call raises EventStoreUnavailable
    await read_store.close()
    async with ManagementApi.from_settings(settings) as api:
        report = await collect_status(settings, event_store, read_store, api)
    assert not report.healthy
    assert report.reasons[0].startswith(
        "read store unavailable, projection consumers paused until it answers: "
    )
    assert report.reasons[1].startswith(
        "event store unavailable, command consumers paused until it answers: "
    )


async def test_gateway_and_projection_lag_above_the_limit(settings: Settings) -> None:
    settings = settings.model_copy(update={"status_max_lag_events": 3})
    await declare_queues(settings)
    stored = await store_orders(settings.event_store, 2)  # no gateway: nothing is published

    result = await conveyor_status(settings, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    document = json.loads(result.stdout)
    gateway = document["gateway"]
    assert gateway["position"] == 0
    assert gateway["events_behind"] == stored
    assert gateway["events_behind_is_lower_bound"] is False
    assert gateway["seconds_behind"] > 0
    assert gateway["lease_active"] is False
    for name, projection in document["projections"].items():
        assert projection["position"] is None
        assert projection["events_behind"] == (0 if name == "stock_levels" else stored)
    assert any(
        reason.startswith(f"gateway is {stored} events / ") and "(limits 3 events, 60s)" in reason
        for reason in document["reasons"]
    ), document["reasons"]
    assert any(
        reason.startswith(f"projection order_summary is {stored} events / ")
        for reason in document["reasons"]
    ), document["reasons"]


async def test_management_api_unreachable_or_refusing_is_exit_2_without_passwords(
    settings: Settings,
) -> None:
    await create_stores(settings)
    secret = "s3cr3t-pw"
    unreachable = await conveyor_status(
        settings, CONVEYOR_MANAGEMENT_URL=f"http://operator:{secret}@127.0.0.1:1/"
    )
    refused = await conveyor_status(
        settings,
        "--json",
        CONVEYOR_MANAGEMENT_URL=f"http://operator:{secret}@127.0.0.1:15672/",
    )
    for result, fragment in ((unreachable, "unreachable"), (refused, "refused the credentials")):
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("conveyor: error: RabbitMQ management API at ")
        assert "http://operator:***@127.0.0.1:" in lines[0]
        assert fragment in lines[0]
        assert secret not in result.stderr


async def test_watch_refreshes_until_interrupted(settings: Settings) -> None:
    await declare_queues(settings)
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "conveyor", "status", "--watch", "0.2", "--json"),
        env=environment(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), 15)
        second = await asyncio.wait_for(process.stdout.readline(), 15)
        assert json.loads(first)["checked_at"] < json.loads(second)["checked_at"]
        process.send_signal(signal.SIGINT)  # Ctrl-C
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 1  # the last verdict: nobody consumes
    assert b"Traceback" not in stderr


async def test_progress_keeps_the_highest_position_of_competing_workers(
    settings: Settings,
) -> None:
    store = await open_read_store(settings)
    try:
        fast, slow = ProgressWriter(store), ProgressWriter(store)
        fast.tracker("order_summary").observe(7)
        slow.tracker("order_summary").observe(5)
        slow.tracker("order_summary").observe(None)  # a message without the header
        await fast.flush()
        await slow.flush()  # behind the other worker: must not move the position back
        fast.start()
        started = time.monotonic()
        fast.tracker("order_summary").observe(9)
        await fast.stop()  # the last position is written on stop
        assert time.monotonic() - started < 1
        progress = await read_progress(store, ["order_summary", "active_orders"])
        assert list(progress) == ["order_summary"]
        assert progress["order_summary"].position == 9
    finally:
        await store.close()
