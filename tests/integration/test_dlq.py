"""`conveyor dlq` against the real RabbitMQ: list, show, redrive (exactly once, even when
killed), purge, and the refusals.

The console's path — *Move messages* from `<queue>.dlq` to `<queue>`, which must give the
message a fresh retry budget too — is covered by test_command_worker.py
(test_a_persistent_failure_reaches_the_dlq_after_n_attempts_and_a_redrive_applies_it and
test_a_broker_dead_letter_moved_back_gets_a_fresh_budget).
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest

from conveyor.bootstrap import command_queue
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.operations import dead_letters
from conveyor.operations.dead_letters import error_type_of, peek_warning
from conveyor.operations.management import ManagementApi
from conveyor.settings import Settings
from messaging import failures
from tests.integration.test_command_worker import RefusedAppends, command, stream_of
from tests.processes import conveyor_env
from tests.rabbit import Management, eventually
from workers.host import WorkerHost

pytestmark = pytest.mark.rabbitmq

StartWorker = Callable[[Settings], Awaitable[WorkerHost]]


def dlq_command(
    settings: Settings, *args: str, stdin: Any = subprocess.DEVNULL, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "dlq", *args],
        env=conveyor_env(settings, **env),
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def dlq(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`conveyor dlq …` as a subprocess, without blocking the loop an in-process worker uses."""
    return await asyncio.to_thread(dlq_command, settings, *args, **env)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("conveyor: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        yield await connection.channel(publisher_confirms=True)


async def declare_queues(channel: aio_pika.abc.AbstractChannel, settings: Settings) -> str:
    """The command queue's topology, as a worker declares it (no consumer); returns the DLQ."""
    work_queue = command_queue(settings)
    for queue in work_queue.all_queues():
        await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)
    return work_queue.dead_letter_queue


def conveyor_headers(error_type: str, *, age: timedelta = timedelta(0), **extra: Any) -> dict:
    """The headers FailureRouter puts on a dead letter."""
    at = (datetime.now(UTC) - age).isoformat()
    return {
        failures.ATTEMPTS: 3,
        failures.FIRST_FAILURE_AT: at,
        failures.LAST_FAILURE_AT: at,
        failures.ERROR_TYPE: error_type,
        failures.ERROR_MESSAGE: f"{error_type} happened",
        failures.FAILURE_CLASS: "transient",
        failures.DEAD_LETTERED_AT: at,
        **extra,
    }


def broker_headers(work_queue: str, reason: str = "delivery_limit") -> dict:
    """What RabbitMQ puts on a message it dead-letters itself (no conveyor headers)."""
    return {
        "x-death": [
            {
                "queue": work_queue,
                "reason": reason,
                "count": 1,
                "exchange": "",
                "routing-keys": [work_queue],
                "time": datetime.now(UTC).replace(microsecond=0),
            }
        ],
        "x-first-death-reason": reason,
        "x-first-death-queue": work_queue,
        "x-first-death-exchange": "",
    }


async def put(
    channel: aio_pika.abc.AbstractChannel,
    queue: str,
    headers: dict[str, Any],
    message_id: str | None = None,
    body: dict[str, Any] | None = None,
) -> str:
    message_id = message_id or str(uuid.uuid4())
    payload = body or {"type": "CreateOrder", "command_id": message_id, "order_id": "o-x"}
    await channel.default_exchange.publish(
        aio_pika.Message(
            json.dumps(payload).encode(),
            headers=headers,
            message_id=message_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=queue,
    )
    return message_id


async def depth(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


async def drain(channel: aio_pika.abc.AbstractChannel, queue: str) -> list[Any]:
    """Consume every ready message of a queue (no ack): the messages, in queue order."""
    declared = await channel.declare_queue(queue, passive=True)
    expected = declared.declaration_result.message_count or 0
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []
    if not expected:
        return taken
    all_taken = asyncio.Event()

    async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        taken.append(message)
        if len(taken) >= expected:
            all_taken.set()

    consumer_tag = await declared.consume(take, no_ack=True)
    try:
        await asyncio.wait_for(all_taken.wait(), 20)
    finally:
        await declared.cancel(consumer_tag)
    return taken


async def test_list_counts_each_dlq_with_its_error_types_and_oldest_age(
    settings: Settings, channel: aio_pika.abc.AbstractChannel
) -> None:
    dlq_name = await declare_queues(channel, settings)
    work = settings.command_queue
    await put(channel, dlq_name, conveyor_headers("ValidationError", age=timedelta(hours=2)))
    await put(channel, dlq_name, conveyor_headers("EventStoreUnavailable"))
    await put(channel, dlq_name, conveyor_headers("ValidationError"))
    await put(channel, dlq_name, broker_headers(work))

    listed = await dlq(settings, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = [queue for queue in json.loads(listed.stdout) if queue["queue"] == dlq_name]
    assert entry["messages"] == 4
    assert entry["error_types"] == {
        "ValidationError": 2,
        "EventStoreUnavailable": 1,
        "delivery_limit": 1,
    }
    assert next(iter(entry["error_types"])) == "ValidationError"  # most common first
    assert 2 * 3600 <= entry["oldest_age_seconds"] < 2 * 3600 + 60

    table = await dlq(settings, "list")
    assert table.returncode == 0, table.stderr
    assert "ValidationError: 2" in table.stdout
    assert "2h 0m" in table.stdout
    assert await depth(channel, dlq_name) == 4  # listing consumed nothing


async def test_show_prints_each_dead_letter_and_leaves_it_in_the_queue(
    settings: Settings, channel: aio_pika.abc.AbstractChannel
) -> None:
    dlq_name = await declare_queues(channel, settings)
    work = settings.command_queue
    first = await put(
        channel, dlq_name, conveyor_headers("ValidationError", **{failures.ORIGINAL_QUEUE: work})
    )
    second = await put(channel, dlq_name, broker_headers(work))
    third = await put(channel, dlq_name, conveyor_headers("EventStoreUnavailable"))

    shown = await dlq(settings, "show", dlq_name, "--limit", "2", "--json")
    assert shown.returncode == 0, shown.stderr
    result = json.loads(shown.stdout)
    assert result["messages"] == 3
    ours, brokers = result["dead_letters"]
    assert ours["message_id"] == first
    assert ours["error_type"] == "ValidationError"
    assert ours["error_message"] == "ValidationError happened"
    assert ours["failure_class"] == "transient"
    assert ours["attempts"] == 3
    for moment in ("first_failure_at", "last_failure_at", "dead_lettered_at"):
        assert datetime.fromisoformat(ours[moment]) <= datetime.now(UTC)
    assert ours["original_queue"] == work
    assert json.loads(ours["body"])["command_id"] == first
    assert brokers["message_id"] == second
    assert brokers["error_type"] == "delivery_limit"
    assert brokers["attempts"] is None
    assert brokers["original_queue"] == work  # the DLQ's name without .dlq
    assert brokers["last_failure_at"] is not None  # the x-death record's time

    text = await dlq(settings, "show", dlq_name)
    assert text.returncode == 0, text.stderr
    assert f"message_id={third} error=EventStoreUnavailable (transient)" in text.stdout
    assert "attempts 3" in text.stdout
    assert f'"command_id": "{first}"' in text.stdout
    assert "3 of 3 message(s)" in text.stdout

    # Nothing was consumed (on 3.10 quorum queues the peeked messages went to the back).
    assert sorted(m.message_id for m in await drain(channel, dlq_name)) == sorted(
        [first, second, third]
    )


async def test_redrive_gives_a_fresh_retry_budget_and_a_running_worker_applies_the_commands(
    settings: Settings,
    start_worker: StartWorker,
    reader: SqliteEventStore,
    channel: aio_pika.abc.AbstractChannel,
    management: Management,
    test_vhost: str,
) -> None:
    # max_attempts=3, delays 0.2s, 0.4s; any free port for the worker's metrics and health
    settings = settings.model_copy(update={"ops_port": 0, "conflict_attempts": 1})
    await start_worker(settings)
    dlq_name = f"{settings.command_queue}.dlq"
    ours = command("CreateOrder", "o-ours", customer_id="c")
    brokers = command("CreateOrder", "o-broker", customer_id="c")
    lock = RefusedAppends(settings.event_store, "o-ours", "o-broker")
    try:
        await put(channel, settings.command_queue, {}, ours["command_id"], ours)
        await eventually(lambda: _depth_is(channel, dlq_name, 1), what="the dead letter")
        # A broker dead letter one attempt short of the budget, were its attempts counted.
        await put(
            channel,
            dlq_name,
            {**broker_headers(settings.command_queue), failures.ATTEMPTS: 2},
            brokers["command_id"],
            brokers,
        )
        redriven_at = datetime.now(UTC).isoformat()
        moved = await dlq(settings, "redrive", dlq_name)
        assert moved.returncode == 0, moved.stderr
        assert f"moved 2 message(s) from {dlq_name}" in moved.stdout

        # Still failing: both go through the whole budget again before the DLQ.
        dead = await eventually(
            lambda: len(peeked := management.peek(test_vhost, dlq_name)) == 2 and peeked,
            what="both back in the DLQ",
        )
        for message in dead:
            headers = message["properties"]["headers"]
            assert headers[failures.ATTEMPTS] == 3
            assert headers[failures.FIRST_FAILURE_AT] > redriven_at
            assert headers[failures.FIRST_FAILURE_AT] < headers[failures.LAST_FAILURE_AT]
    finally:
        lock.release()

    moved = await dlq(settings, "redrive", dlq_name)
    assert "moved 2 message(s)" in moved.stdout, moved.stderr
    for order_id, sent in (("o-ours", ours), ("o-broker", brokers)):
        events = await eventually(lambda o=order_id: stream_of(reader, o), what=order_id)
        assert [event.metadata["command_id"] for event in events] == [sent["command_id"]]
    await eventually(lambda: _depth_is(channel, dlq_name, 0), what="an empty DLQ")


async def _depth_is(channel: aio_pika.abc.AbstractChannel, queue: str, expected: int) -> bool:
    return await depth(channel, queue) == expected


async def test_redrive_with_limit_and_error_type_moves_only_those(
    settings: Settings, channel: aio_pika.abc.AbstractChannel
) -> None:
    dlq_name = await declare_queues(channel, settings)
    work = settings.command_queue
    ids = [
        await put(channel, dlq_name, conveyor_headers(kind), f"m{number}")
        for number, kind in enumerate(["Invalid", "Transient"] * 3)
    ]

    moved = await dlq(settings, "redrive", dlq_name, "--error-type", "Invalid", "--limit", "2")
    assert moved.returncode == 0, moved.stderr
    assert f"moved 2 message(s) from {dlq_name} (2 to {work})" in moved.stdout
    assert "4 stay" in moved.stdout
    copies = await drain(channel, work)
    assert [copy.message_id for copy in copies] == ["m0", "m2"]
    for copy in copies:  # the dead letter's record travels with it; the marker restarts it
        assert copy.headers[failures.ERROR_TYPE] == "Invalid"
        assert failures.DEAD_LETTERED_AT in copy.headers
        assert failures.previous_attempts(copy.headers, work) == 0
        assert json.loads(copy.body)["command_id"] == copy.message_id
    remaining = await drain(channel, dlq_name)
    assert sorted(m.message_id for m in remaining) == ["m1", "m3", "m4", "m5"]

    for message in remaining:  # put them back, in order, for --limit alone
        await put(channel, dlq_name, dict(message.headers), message.message_id)
    moved = await dlq(settings, "redrive", dlq_name, "--limit", "3")
    assert "moved 3 message(s)" in moved.stdout, moved.stderr
    assert [copy.message_id for copy in await drain(channel, work)] == ["m1", "m3", "m4"]
    assert [m.message_id for m in await drain(channel, dlq_name)] == ["m5"]
    assert set(ids) == {f"m{n}" for n in range(6)}


async def test_redrive_moves_only_to_the_queue_the_dlq_belongs_to(
    settings: Settings, channel: aio_pika.abc.AbstractChannel
) -> None:
    """An original-queue header is a sender's claim: one naming another queue (a projection
    queue, a queue that does not exist) is not followed."""
    dlq_name = await declare_queues(channel, settings)
    elsewhere = f"{settings.projection_queue_prefix}.order_summary"
    await channel.declare_queue(elsewhere, auto_delete=True)
    for number in range(6):
        original = ("no-such-queue", elsewhere, settings.command_queue)[number % 3]
        await put(
            channel,
            dlq_name,
            conveyor_headers("Invalid", **{failures.ORIGINAL_QUEUE: original}),
            f"m{number}",
        )
    result = await dlq(settings, "redrive", dlq_name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(m.message_id for m in await drain(channel, settings.command_queue)) == [
        f"m{n}" for n in range(6)
    ]
    assert await depth(channel, elsewhere) == 0


async def test_redrive_stops_before_a_missing_queue_and_leaves_the_batch_in_the_dlq(
    settings: Settings, channel: aio_pika.abc.AbstractChannel
) -> None:
    """The work queue deleted under the DLQ: the batch is rolled back, the copies already
    published in its transaction are discarded, not delivered."""
    dlq_name = await declare_queues(channel, settings)
    for number in range(5):
        await put(channel, dlq_name, conveyor_headers("Invalid"), f"m{number}")
    await channel.queue_delete(settings.command_queue, if_unused=False, if_empty=False)
    result = await dlq(settings, "redrive", dlq_name)
    assert_one_line_error(result, repr(settings.command_queue), "does not exist")
    await eventually(lambda: _depth_is(channel, dlq_name, 5), what="the batch back in the DLQ")
    assert sorted(m.message_id for m in await drain(channel, dlq_name)) == [
        f"m{n}" for n in range(5)
    ]


class Interrupted(Exception):
    """Stands for Ctrl-C or a lost connection."""


async def test_a_redrive_interrupted_just_before_its_commit_moves_nothing(
    settings: Settings, channel: aio_pika.abc.AbstractChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies published and originals acked, then the interruption: the broker discards
    the open transaction and returns the originals when the connection closes."""
    dlq_name = await declare_queues(channel, settings)
    sent = [await put(channel, dlq_name, conveyor_headers("X"), f"m{n}") for n in range(5)]

    async def interrupt(*_: object) -> None:
        raise Interrupted

    monkeypatch.setattr(dead_letters, "_check_destinations", interrupt)
    async with ManagementApi.from_settings(settings) as api:
        with pytest.raises(Interrupted):
            await dead_letters.redrive(settings, api, dlq_name)

    await eventually(lambda: _depth_is(channel, dlq_name, 5), what="the originals returned")
    assert await depth(channel, settings.command_queue) == 0
    assert sorted(m.message_id for m in await drain(channel, dlq_name)) == sorted(sent)


async def test_a_killed_redrive_moves_each_message_exactly_once(
    settings: Settings, channel: aio_pika.abc.AbstractChannel
) -> None:
    dlq_name = await declare_queues(channel, settings)
    work = settings.command_queue
    total = 3000
    sent = [f"m{number}" for number in range(total)]
    for chunk in range(0, total, 500):
        await asyncio.gather(
            *(put(channel, dlq_name, conveyor_headers("X"), i) for i in sent[chunk : chunk + 500])
        )
    assert await depth(channel, dlq_name) == total

    moved_before = 0
    for _ in range(3):  # SIGKILL three times, at different points of the re-drive
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "conveyor", "dlq", "redrive", dlq_name, "--batch-size", "50"),
            env=conveyor_env(settings),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await eventually(
                lambda n=moved_before: _depth_above(channel, work, n + 100),
                interval=0.005,
                what="the re-drive under way",
            )
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        # The broker returns the killed transaction's originals once it sees the socket close.
        await eventually(
            lambda: _total_is(channel, [dlq_name, work], total), what="every message once"
        )
        moved_now = await depth(channel, work)
        assert moved_before < moved_now < total, "the kill should land mid-way"
        moved_before = moved_now

    finished = await dlq(settings, "redrive", dlq_name)
    assert finished.returncode == 0, finished.stderr
    assert f"moved {total - moved_before} message(s)" in finished.stdout
    assert await depth(channel, dlq_name) == 0
    arrived = [message.message_id for message in await drain(channel, work)]
    assert len(arrived) == total
    assert sorted(arrived) == sorted(sent)  # none lost, none twice


async def _depth_above(channel: aio_pika.abc.AbstractChannel, queue: str, floor: int) -> bool:
    return await depth(channel, queue) >= floor


async def _total_is(channel: aio_pika.abc.AbstractChannel, queues: list[str], total: int) -> bool:
    return sum([await depth(channel, queue) for queue in queues]) == total


async def test_purge_asks_first_and_refuses_without_a_terminal(
    settings: Settings, channel: aio_pika.abc.AbstractChannel
) -> None:
    dlq_name = await declare_queues(channel, settings)
    for _ in range(3):
        await put(channel, dlq_name, conveyor_headers("X"))

    refused = await dlq(settings, "purge", dlq_name)  # stdin is not a terminal
    assert_one_line_error(refused, "not purging 3 message(s)", "--yes")
    declined = await asyncio.to_thread(_purge_on_a_terminal, settings, dlq_name, "n")
    assert declined.returncode != 0
    assert await depth(channel, dlq_name) == 3

    confirmed = await asyncio.to_thread(_purge_on_a_terminal, settings, dlq_name, "y")
    assert confirmed.returncode == 0, confirmed.stderr
    assert f"purged 3 message(s) from {dlq_name}" in confirmed.stdout
    assert await depth(channel, dlq_name) == 0

    await put(channel, dlq_name, conveyor_headers("X"))
    purged = await dlq(settings, "purge", dlq_name, "--yes")
    assert purged.returncode == 0, purged.stderr
    assert f"purged 1 message(s) from {dlq_name}" in purged.stdout
    assert await depth(channel, dlq_name) == 0


def _purge_on_a_terminal(
    settings: Settings, queue: str, answer: str
) -> subprocess.CompletedProcess[str]:
    """`conveyor dlq purge` with a terminal as stdin, answering the prompt."""
    terminal, stdin = pty.openpty()
    try:
        os.write(terminal, f"{answer}\n".encode())
        return dlq_command(settings, "purge", queue, stdin=stdin)
    finally:
        os.close(stdin)
        os.close(terminal)


async def test_dlq_commands_refuse_other_queues_and_name_an_unreachable_api_without_secrets(
    settings: Settings, channel: aio_pika.abc.AbstractChannel
) -> None:
    dlq_name = await declare_queues(channel, settings)
    work = settings.command_queue
    await put(channel, work, conveyor_headers("X"))

    not_dlq = await dlq(settings, "purge", work, "--yes")
    assert_one_line_error(not_dlq, f"{work!r} is not a dead-letter queue", repr(dlq_name))
    assert await depth(channel, work) == 1
    for args in (("show", work), ("redrive", work)):
        assert_one_line_error(await dlq(settings, *args), "is not a dead-letter queue")

    unknown = await dlq(settings, "redrive", "no-such-queue.dlq")
    assert_one_line_error(unknown, "'no-such-queue.dlq' does not exist")

    started = time.monotonic()
    unreachable = await dlq(
        settings, "list", CONVEYOR_MANAGEMENT_URL="http://ops:s3cret@127.0.0.1:1/"
    )
    assert_one_line_error(unreachable, "unreachable", "127.0.0.1:1")
    assert "s3cret" not in unreachable.stderr
    assert time.monotonic() - started < 20


def test_peeking_warns_only_where_a_peek_counts_towards_a_default_delivery_limit() -> None:
    dlq_record = {"name": "orders.commands.dlq", "type": "quorum", "arguments": {}}
    assert "delivery limit (20)" in (peek_warning("4.1.4", dlq_record) or "")
    assert peek_warning("3.10.8", dlq_record) is None  # no default limit
    assert peek_warning("4.3.0", dlq_record) is None  # a nack is not a failed delivery
    limited = {**dlq_record, "effective_policy_definition": {"delivery-limit": -1}}
    assert peek_warning("4.0.5", limited) is None
    assert peek_warning("4.0.5", {**dlq_record, "type": "classic"}) is None


def test_the_error_type_of_a_broker_dead_letter_is_its_reason() -> None:
    assert error_type_of(conveyor_headers("ValidationError")) == "ValidationError"
    assert error_type_of(broker_headers("q")) == "delivery_limit"
    assert error_type_of({"x-death": [{"reason": b"rejected"}]}) == "rejected"
    assert error_type_of({}) == "unknown"


async def test_show_escapes_what_would_drive_the_terminal(
    settings: Settings, channel: aio_pika.abc.AbstractChannel
) -> None:
    """message_id, headers and a non-JSON body come from whoever published the message."""
    dlq_name = await declare_queues(channel, settings)
    await channel.default_exchange.publish(
        aio_pika.Message(
            b"not json \x1b]0;owned\x07\x1b[2J\nfake line",
            message_id="m\x1b[31m-1\n#2 message_id=forged",
            headers=conveyor_headers("Bad\x1b[5m", **{failures.ERROR_MESSAGE: "x\ry"}),
        ),
        routing_key=dlq_name,
    )
    shown = await dlq(settings, "show", dlq_name)
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout
    assert "\x07" not in shown.stdout
    assert "\r" not in shown.stdout
    assert "message_id=m\\x1b[31m-1\\x0a#2 message_id=forged" in shown.stdout
    assert "body: not json \\x1b]0;owned\\x07\\x1b[2J\\x0afake line" in shown.stdout
    assert len(shown.stdout.splitlines()) == 5  # four lines for the letter, one summary
