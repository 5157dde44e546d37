"""The `conveyor` command line, run as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.settings import Settings
from workers.host import WorkerHost

pytestmark = pytest.mark.rabbitmq


def conveyor(settings: Settings | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ)
    if settings is not None:
        environment |= {
            "CONVEYOR_AMQP_URL": settings.amqp_url,
            "CONVEYOR_EVENT_STORE": settings.event_store,
            "CONVEYOR_COMMAND_QUEUE": settings.command_queue,
            "CONVEYOR_READ_STORE": settings.read_store,
            "CONVEYOR_PROJECTION_QUEUE_PREFIX": settings.projection_queue_prefix,
            "CONVEYOR_HTTP_PORT": "0",
            "CONVEYOR_OPS_PORT": "0",
        }
    environment |= env
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )


async def aconveyor(
    settings: Settings | None, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`conveyor` without blocking the event loop, where an in-process worker runs."""
    return await asyncio.to_thread(conveyor, settings, *args, **env)


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], *fragments: str, logs_before: bool = False
) -> None:
    """A failure is one line on stderr (after the worker's own log lines, for `run`, and
    the line naming the store a command opened)."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    while lines and lines[0].startswith(("conveyor: event store ", "conveyor: read store ")):
        lines = lines[1:]
    if logs_before:
        assert all(" INFO " in line for line in lines[:-1]), result.stderr
    else:
        assert len(lines) == 1, result.stderr
    assert lines[-1].startswith("conveyor: error: ")
    for fragment in fragments:
        assert fragment in lines[-1]


async def test_send_wait_and_history_through_a_running_worker(
    settings: Settings, start_worker: Callable[[Settings], Awaitable[WorkerHost]]
) -> None:
    await start_worker(settings)
    sent = [
        '{"type":"CreateOrder","order_id":"o-cli","customer_id":"alice"}',
        '{"type":"AddItem","order_id":"o-cli","sku":"SKU-1","quantity":2,"unit_price":"9.99"}',
        '{"type":"AddItem","order_id":"o-cli","sku":"SKU-2","quantity":1,"unit_price":0.5}',
        '{"type":"ConfirmOrder","order_id":"o-cli"}',
    ]
    # Only the command worker runs: outcomes, not read models (read-your-writes is tested
    # in test_queries.py), so --no-read-model keeps each send from waiting out its timeout.
    for body in sent:
        result = await aconveyor(settings, "send", body, "--wait", "--no-read-model")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["status"] == "accepted"

    rejected = await aconveyor(
        settings, "send", '{"type":"ConfirmOrder","order_id":"o-cli"}', "--wait"
    )
    assert rejected.returncode == 4
    outcome = json.loads(rejected.stdout)
    assert outcome["status"] == "rejected"
    assert outcome["rule"] == "order_already_confirmed"

    again = await aconveyor(
        settings, "send", '{"type":"CancelOrder","order_id":"o-cli","reason":"x","command_id":"k"}'
    )
    assert again.returncode == 0
    assert "command_id=k" in again.stdout

    now = json.loads((await aconveyor(settings, "history", "o-cli", "--json")).stdout)
    assert [e["type"] for e in now["events"]][:4] == [
        "OrderCreated",
        "ItemAdded",
        "ItemAdded",
        "OrderConfirmed",
    ]
    assert now["events"][3]["data"] == {"total": "20.48"}

    at_two = json.loads(
        (await aconveyor(settings, "history", "o-cli", "--as-of-version", "2", "--json")).stdout
    )
    assert at_two["state"]["version"] == 2
    assert at_two["state"]["status"] == "pending"
    assert at_two["state"]["items"] == [{"sku": "SKU-1", "quantity": 2, "unit_price": "9.99"}]
    assert at_two["state"]["total"] == "19.98"

    third_at = now["events"][2]["occurred_at"]
    by_time = json.loads(
        (await aconveyor(settings, "history", "o-cli", "--as-of", third_at, "--json")).stdout
    )
    assert by_time["state"]["version"] == 3

    text = await aconveyor(settings, "history", "o-cli", "--as-of-version", "4")
    assert text.returncode == 0
    assert "state at version 4: confirmed" in text.stdout
    assert "total 20.48" in text.stdout


async def test_history_of_an_unknown_order_says_so(settings: Settings) -> None:
    # An event store that exists (a missing one is refused: test_sqlite_paths.py).
    await (await SqliteEventStore(settings.event_store).open()).close()
    result = await aconveyor(settings, "history", "nobody")
    assert result.returncode == 1
    assert "has no events" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("history", "o", "--as-of", "yesterday"), "--as-of must be an ISO 8601 time"),
        (("history", "o", "--as-of", "2026-01-01", "--as-of-version", "1"), "not both"),
        (("send", "{nope"), "not valid JSON"),
        (("send", "[1, 2]"), "must be a JSON object"),
    ],
)
def test_bad_arguments_get_one_clear_line(
    settings: Settings, args: tuple[str, ...], fragment: str
) -> None:
    result = conveyor(settings, *args)
    assert result.returncode == 2
    assert_one_line_error(result, fragment)


def test_a_bad_setting_is_named(settings: Settings) -> None:
    result = conveyor(settings, "history", "o", CONVEYOR_PREFETCH="0")
    assert result.returncode == 2
    assert_one_line_error(result, "invalid configuration", "CONVEYOR_PREFETCH")


@pytest.mark.parametrize("command", [("run",), ("send", '{"type":"ConfirmOrder","order_id":"o"}')])
def test_an_unreachable_broker_is_one_line_without_the_password(
    settings: Settings, command: tuple[str, ...]
) -> None:
    result = conveyor(settings, *command, CONVEYOR_AMQP_URL="amqp://user:s3cret@127.0.0.1:1/")
    assert_one_line_error(
        result,
        "cannot connect to RabbitMQ",
        "amqp://user:***@127.0.0.1:1/",
        logs_before=command == ("run",),
    )
    assert "s3cret" not in result.stderr + result.stdout


def test_an_unusable_event_store_is_one_line(settings: Settings, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = conveyor(settings, "run", CONVEYOR_EVENT_STORE=str(blocker / "events.db"))
    assert_one_line_error(
        result,
        "event store unavailable",
        f"{blocker} exists and is not a directory",
        logs_before=True,
    )


def test_sending_before_any_worker_declared_the_queue_explains(settings: Settings) -> None:
    result = conveyor(settings, "send", '{"type":"ConfirmOrder","order_id":"o"}')
    assert_one_line_error(result, "does not exist", "conveyor run")


async def test_send_wait_times_out_with_a_clear_message(
    settings: Settings, start_worker: Callable[[Settings], Awaitable[WorkerHost]]
) -> None:
    host = await start_worker(settings)  # declares the queue…
    await host.stop()  # …and nobody consumes it any more
    result = await aconveyor(
        settings,
        "send",
        '{"type":"ConfirmOrder","order_id":"o","command_id":"late"}',
        "--wait",
        "--timeout",
        "1",
    )
    assert result.returncode == 3
    assert_one_line_error(result, "no outcome within 1s", "late", "queued")
