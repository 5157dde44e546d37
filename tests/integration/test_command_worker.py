"""The command worker against the real RabbitMQ and a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aio_pika
import pytest

from conveyor.aggregates.orders import ORDERS
from conveyor.application.aggregates import is_marker
from conveyor.embedded.sqlite_library import sqlite3
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.operations import dead_letters
from conveyor.operations.management import ManagementApi
from conveyor.settings import Settings
from messaging import failures
from tests.rabbit import Management, eventually, publish, publish_many, queue_depth
from workers.host import WorkerHost

pytestmark = pytest.mark.rabbitmq

StartWorker = Callable[[Settings], Awaitable[WorkerHost]]


def command(type_: str, order_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "command_id": str(uuid.uuid4()), "order_id": order_id, **fields}


async def stream_of(reader: SqliteEventStore, order_id: str) -> list[Any]:
    """The order's domain events (rejection markers left out: checked where they matter)."""
    return [e for e in await reader.read_stream(ORDERS.stream(order_id)) if not is_marker(e)]


def dlq_messages(management: Management, vhost: str, settings: Settings) -> list[dict[str, Any]]:
    return management.peek(vhost, f"{settings.command_queue}.dlq")


class DatabaseLock:
    """Holds SQLite's write lock from another connection: the store is 'down' for writers."""

    def __init__(self, path: str) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._connection.execute("BEGIN EXCLUSIVE")
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.execute("ROLLBACK")
                self._connection.close()
                self._connection = None  # type: ignore[assignment]


class RefusedAppends:
    """A trigger refuses every append to these orders' streams: a failure of those messages
    alone (the adapter reports it as a ConcurrencyError) while the store stays up — unlike
    a locked file, which pauses consuming (tests/integration/test_store_outage.py)."""

    def __init__(self, path: str, *order_ids: str, streams: tuple[str, ...] = ()) -> None:
        self._path = path
        names = (*(ORDERS.stream(order_id) for order_id in order_ids), *streams)
        streams_sql = ", ".join(f"'{name}'" for name in names)
        self._execute(
            "CREATE TRIGGER refused_appends BEFORE INSERT ON events "
            f"WHEN NEW.stream_id IN ({streams_sql}) BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )

    def _execute(self, sql: str) -> None:
        connection = sqlite3.connect(self._path, isolation_level=None)
        try:
            connection.execute(sql)
        finally:
            connection.close()

    def release(self) -> None:
        self._execute("DROP TRIGGER IF EXISTS refused_appends")


async def test_a_command_published_through_the_default_exchange_produces_its_events(
    settings: Settings, start_worker: StartWorker, reader: SqliteEventStore, amqp_url: str
) -> None:
    await start_worker(settings)
    create = command("CreateOrder", "o-1", customer_id="c-1", correlation_id="corr-1")
    add = command("AddItem", "o-1", sku="SKU-1", quantity=2, unit_price="9.99")
    await publish(amqp_url, settings.command_queue, create)
    await eventually(lambda: stream_of(reader, "o-1"), what="OrderCreated")
    await publish(amqp_url, settings.command_queue, add)

    events = await eventually(
        lambda: _at_least(stream_of(reader, "o-1"), 2), what="ItemAdded stored"
    )
    assert [e.type for e in events] == ["OrderCreated", "ItemAdded"]
    assert events[0].metadata == {
        "command_id": create["command_id"],
        "correlation_id": "corr-1",
        "causation_id": create["command_id"],
    }
    assert events[1].data == {"sku": "SKU-1", "quantity": 2, "unit_price": "9.99"}
    assert events[1].metadata["correlation_id"] == add["command_id"]


async def _at_least(events: Awaitable[list[Any]], count: int) -> list[Any] | None:
    result = await events
    return result if len(result) >= count else None


async def test_the_same_command_delivered_twice_applies_once_and_replies_duplicate(
    settings: Settings, start_worker: StartWorker, reader: SqliteEventStore, amqp_url: str
) -> None:
    await start_worker(settings)
    create = command("CreateOrder", "o-dup", customer_id="c-1")
    add = command("AddItem", "o-dup", sku="SKU-1", quantity=1, unit_price="1.00")
    # command_id from the AMQP message_id when the body has none
    by_message_id = {k: v for k, v in add.items() if k != "command_id"} | {"sku": "SKU-2"}
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        for body, message_id in [
            (create, None),
            (create, None),
            (add, None),
            (add, None),
            (by_message_id, "mid-1"),
            (by_message_id, "mid-1"),
        ]:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    json.dumps(body).encode(),
                    reply_to=replies.name,
                    correlation_id=f"corr-{len(body)}",
                    message_id=message_id,
                ),
                routing_key=settings.command_queue,
            )
            # one at a time so the duplicate arrives after the original was applied
            outcome = await _next_reply(replies)
            assert outcome["status"] in ("accepted", "duplicate")
        events = await stream_of(reader, "o-dup")
        assert [e.type for e in events] == ["OrderCreated", "ItemAdded", "ItemAdded"]
        assert events[2].metadata["command_id"] == "mid-1"
        assert [e.version for e in events] == [1, 2, 3]


async def _next_reply(queue: aio_pika.abc.AbstractQueue) -> dict[str, Any]:
    async def get() -> aio_pika.abc.AbstractIncomingMessage | None:
        return await queue.get(fail=False, no_ack=True)

    message = await eventually(get, what="a reply")
    return json.loads(message.body)


async def test_reply_reports_each_status_with_the_correlation_id(
    settings: Settings, start_worker: StartWorker, amqp_url: str
) -> None:
    await start_worker(settings)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        outcomes_queue = await channel.declare_queue(exclusive=True)
        await outcomes_queue.bind("conveyor.command-outcomes", routing_key="orders.command.#")
        create = command("CreateOrder", "o-r", customer_id="c")
        sent = [create, create, command("ConfirmOrder", "o-r")]
        statuses = []
        for n, body in enumerate(sent):
            await channel.default_exchange.publish(
                aio_pika.Message(
                    json.dumps(body).encode(), reply_to=replies.name, correlation_id=f"c{n}"
                ),
                routing_key=settings.command_queue,
            )
            message = await eventually(lambda: replies.get(fail=False, no_ack=True), what="a reply")
            assert message.correlation_id == f"c{n}"
            statuses.append(json.loads(message.body))
        assert [s["status"] for s in statuses] == ["accepted", "duplicate", "rejected"]
        assert statuses[1]["version"] == 1
        assert statuses[2]["rule"] == "empty_order"
        assert "no items" in statuses[2]["reason"]
        # observable without reply_to too: every outcome is on the outcomes exchange
        published = []
        for _ in range(3):
            message = await eventually(
                lambda: outcomes_queue.get(fail=False, no_ack=True), what="an outcome"
            )
            published.append((message.routing_key, json.loads(message.body)["status"]))
        assert published == [
            ("orders.command.accepted", "accepted"),
            ("orders.command.duplicate", "duplicate"),
            ("orders.command.rejected", "rejected"),
        ]


async def test_commands_racing_on_one_order_are_all_applied(
    settings: Settings,
    start_worker: StartWorker,
    reader: SqliteEventStore,
    amqp_url: str,
) -> None:
    await start_worker(settings)
    await start_worker(settings)  # two competing consumers
    await publish(
        amqp_url, settings.command_queue, command("CreateOrder", "o-race", customer_id="c")
    )
    await eventually(lambda: stream_of(reader, "o-race"))
    adds = [
        command("AddItem", "o-race", sku=f"SKU-{n}", quantity=1, unit_price="1.00")
        for n in range(40)
    ]
    await publish_many(amqp_url, settings.command_queue, adds)
    events = await eventually(lambda: _at_least(stream_of(reader, "o-race"), 41), what="41 events")
    assert len(events) == 41
    assert sorted(e.data["sku"] for e in events[1:]) == sorted(a["sku"] for a in adds)
    assert [e.version for e in events] == list(range(1, 42))
    assert await queue_depth(amqp_url, f"{settings.command_queue}.dlq") == 0


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        (b"{not json", "MalformedJSON"),
        (b'"a string"', "SchemaError"),
        (b'{"type": "ShipOrder", "command_id": "x", "order_id": "o"}', "UnknownCommandType"),
        (
            b'{"type": "AddItem", "command_id": "x", "order_id": "o", "sku": "s",'
            b' "quantity": "two", "unit_price": "1.00"}',
            "SchemaError",
        ),
        (b'{"type": "CreateOrder", "order_id": "o", "customer_id": "c"}', "MissingCommandId"),
        (
            b'{"type": "CreateOrder", "command_id": "x", "order_id": "o", "customer_id": "c",'
            b' "colour": "red"}',
            "SchemaError",
        ),
    ],
)
async def test_an_invalid_message_goes_straight_to_the_dlq_with_its_reason(
    settings: Settings,
    start_worker: StartWorker,
    amqp_url: str,
    management: Management,
    test_vhost: str,
    body: bytes,
    error_type: str,
) -> None:
    await start_worker(settings)
    before = datetime.now(UTC)
    management.publish(
        test_vhost,
        settings.command_queue,
        body,
        {
            "content_type": "application/json",
            "correlation_id": "corr-bad",
            "headers": {"x-origin": "test"},
            "type": "bad",
            "delivery_mode": 2,
        },
    )
    dead = await eventually(
        lambda: dlq_messages(management, test_vhost, settings), what="a DLQ message"
    )
    assert len(dead) == 1
    message = dead[0]
    assert message["payload"].encode() == body
    properties = message["properties"]
    headers = properties["headers"]
    assert headers[failures.ERROR_TYPE] == error_type
    assert headers[failures.ERROR_MESSAGE]
    assert headers[failures.ATTEMPTS] == 1  # invalid input is never retried
    assert headers[failures.FAILURE_CLASS] == "invalid"
    assert headers[failures.ORIGINAL_QUEUE] == settings.command_queue
    assert datetime.fromisoformat(headers[failures.FIRST_FAILURE_AT]) >= before
    assert headers[failures.LAST_FAILURE_AT] == headers[failures.FIRST_FAILURE_AT]
    assert headers["x-origin"] == "test"  # original headers and properties are kept
    assert properties["correlation_id"] == "corr-bad"
    assert properties["content_type"] == "application/json"
    assert properties["type"] == "bad"
    assert properties["delivery_mode"] == 2
    assert await queue_depth(amqp_url, settings.command_queue) == 0


async def test_valid_traffic_flows_beside_invalid_messages(
    settings: Settings, start_worker: StartWorker, reader: SqliteEventStore, amqp_url: str
) -> None:
    await start_worker(settings)
    for n in range(5):
        await publish(amqp_url, settings.command_queue, b"\x00\xff garbage %d" % n)
        await publish(
            amqp_url, settings.command_queue, command("CreateOrder", f"o-mix-{n}", customer_id="c")
        )
    for n in range(5):
        await eventually(lambda n=n: stream_of(reader, f"o-mix-{n}"))
    await eventually(
        lambda: _equals(queue_depth(amqp_url, f"{settings.command_queue}.dlq"), 5),
        what="5 dead letters",
    )


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


async def test_a_transient_store_failure_is_retried_and_then_succeeds(
    settings: Settings, start_worker: StartWorker, reader: SqliteEventStore, amqp_url: str
) -> None:
    """The store locked: the worker pauses and probes it (tests/integration/
    test_store_outage.py), and the command goes through once it is released."""
    settings = settings.model_copy(update={"max_attempts": 5, "retry_delays": (0.3,)})
    await start_worker(settings)
    lock = DatabaseLock(settings.event_store)
    try:
        await publish(
            amqp_url, settings.command_queue, command("CreateOrder", "o-flaky", customer_id="c")
        )
        await asyncio.sleep(1.0)  # ≥ 2 failed attempts while the store is locked
        assert await stream_of(reader, "o-flaky") == []
    finally:
        released_at = datetime.now(UTC)
        lock.release()
    events = await eventually(lambda: stream_of(reader, "o-flaky"), what="the retried command")
    assert len(events) == 1
    # decided at most one busy timeout before the release: an attempt waiting on the lock
    # when it is released goes through
    busy = timedelta(seconds=settings.sqlite_busy_timeout)
    assert events[0].occurred_at >= released_at - busy
    assert await queue_depth(amqp_url, f"{settings.command_queue}.dlq") == 0


async def test_a_persistent_failure_reaches_the_dlq_after_n_attempts_and_a_redrive_applies_it(
    settings: Settings,
    start_worker: StartWorker,
    reader: SqliteEventStore,
    amqp_url: str,
    management: Management,
    test_vhost: str,
) -> None:
    settings = settings.model_copy(update={"conflict_attempts": 1})
    await start_worker(settings)  # max_attempts=3, delays 0.2s, 0.4s
    dlq = f"{settings.command_queue}.dlq"
    create = command("CreateOrder", "o-down", customer_id="c")
    lock = RefusedAppends(settings.event_store, "o-down")
    try:
        started = time.monotonic()
        await publish(amqp_url, settings.command_queue, create, message_id="m-down")
        dead = await eventually(lambda: dlq_messages(management, test_vhost, settings))
        assert time.monotonic() - started >= 0.6  # both delay tiers were waited out
        headers = dead[0]["properties"]["headers"]
        assert headers[failures.ATTEMPTS] == 3
        assert headers[failures.ERROR_TYPE] == "ConcurrencyError"
        assert "o-down" in headers[failures.ERROR_MESSAGE]
        assert headers[failures.FAILURE_CLASS] == "transient"
        assert headers[failures.FIRST_FAILURE_AT] < headers[failures.LAST_FAILURE_AT]
        assert json.loads(dead[0]["payload"]) == create
        assert headers[failures.ORIGINAL_MESSAGE_ID] == "m-down"  # the copy has its own id

        # Moved back while the store is still down: a fresh budget of 3 attempts, not 1.
        management.move_messages(test_vhost, dlq, settings.command_queue)
        await eventually(lambda: _equals(queue_depth(amqp_url, dlq), 0), what="the move")
        again = await eventually(lambda: dlq_messages(management, test_vhost, settings))
        assert again[0]["properties"]["headers"][failures.ATTEMPTS] == 3
        assert (
            again[0]["properties"]["headers"][failures.FIRST_FAILURE_AT]
            > headers[failures.FIRST_FAILURE_AT]
        )
    finally:
        lock.release()

    management.move_messages(test_vhost, dlq, settings.command_queue)
    events = await eventually(lambda: stream_of(reader, "o-down"), what="the re-driven command")
    assert [e.metadata["command_id"] for e in events] == [create["command_id"]]
    await eventually(lambda: _equals(queue_depth(amqp_url, dlq), 0), what="an empty DLQ")


async def test_a_broker_dead_letter_moved_back_gets_a_fresh_budget(
    settings: Settings,
    start_worker: StartWorker,
    amqp_url: str,
    management: Management,
    test_vhost: str,
) -> None:
    """A message the broker dead-lettered (a reject, or the delivery limit) carries no
    conveyor headers, only x-death; moved back, it must not inherit its old attempts."""
    settings = settings.model_copy(update={"conflict_attempts": 1})
    await start_worker(settings)  # max_attempts=3
    lock = RefusedAppends(settings.event_store, "o-xdeath")
    try:
        management.publish(
            test_vhost,
            settings.command_queue,
            json.dumps(command("CreateOrder", "o-xdeath", customer_id="c")).encode(),
            {
                "headers": {
                    failures.ATTEMPTS: 2,  # one failure away from the DLQ, were it counted
                    "x-death": [
                        {"queue": settings.command_queue, "reason": "rejected", "count": 1}
                    ],
                },
            },
        )
        dead = await eventually(lambda: dlq_messages(management, test_vhost, settings))
        headers = dead[0]["properties"]["headers"]
        assert headers[failures.ATTEMPTS] == 3
        assert headers[failures.FIRST_FAILURE_AT] < headers[failures.LAST_FAILURE_AT]
    finally:
        lock.release()


async def test_each_consumer_has_its_own_channel_with_the_configured_prefetch(
    settings: Settings, start_worker: StartWorker, management: Management, test_vhost: str
) -> None:
    """Prefetch bounds in-flight work and memory, and lets competing workers share a backlog:
    a consumer on the default channel would have no limit at all."""
    await start_worker(settings.model_copy(update={"prefetch": 37}), ("commands", "projections"))
    ours = {settings.command_queue} | {
        f"{settings.projection_queue_prefix}.{name}"
        for name in ("order_summary", "customer_history", "active_orders")
    }

    def consumers() -> list[dict[str, Any]]:
        found = management.get(f"/consumers/{quote(test_vhost, safe='')}")
        return [c for c in found if c["queue"]["name"] in ours]

    found = await eventually(
        lambda: _ready(consumers(), len(ours)), what="the consumers in the management API"
    )
    assert {c["queue"]["name"] for c in found} == ours
    assert {c["prefetch_count"] for c in found} == {37}
    channels = {c["channel_details"]["name"] for c in found}
    assert len(channels) == len(ours), "each consumer consumes on a channel of its own"


async def _ready(found: list[dict[str, Any]], count: int) -> list[dict[str, Any]] | None:
    # channel_details is an empty list until the management stats have caught up
    known = [c for c in found if isinstance(c.get("channel_details"), dict)]
    return known if len(known) >= count else None


async def test_a_rejected_command_redelivered_after_the_order_changed_keeps_its_rejection(
    settings: Settings, start_worker: StartWorker, reader: SqliteEventStore, amqp_url: str
) -> None:
    """The chaos suite's "rejected, then applied": a worker publishes the rejection and dies
    before the ack, the order changes, the broker redelivers. Here the redelivery is real:
    with no worker consuming, a raw consumer takes the command and closes its channel
    without acking, so RabbitMQ requeues it with `redelivered` set; a new worker then gets
    exactly what a dead worker's successor would."""
    from conveyor.application.rejections import COMMAND_REJECTED

    host = await start_worker(settings)
    add = command("AddItem", "o-late", sku="SKU-1", quantity=1, unit_price="1.00")
    create = command("CreateOrder", "o-late", customer_id="c")
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)

        async def send(body: dict[str, Any], **properties: Any) -> dict[str, Any]:
            await channel.default_exchange.publish(
                aio_pika.Message(json.dumps(body).encode(), reply_to=replies.name, **properties),
                routing_key=settings.command_queue,
            )
            return await _next_reply(replies)

        first = await send(add)
        assert (first["status"], first["rule"], first["version"]) == (
            "rejected",
            "order_not_found",
            0,
        )
        assert (await send(create))["status"] == "accepted"
        await host.stop()

        # The same delivery again, now flagged redelivered by the broker.
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps(add).encode(), reply_to=replies.name),
            routing_key=settings.command_queue,
        )
        for delivered_before in (False, True):
            taker = await connection.channel()
            work = await taker.get_queue(settings.command_queue, ensure=False)
            taken = await eventually(
                lambda: work.get(fail=False, no_ack=False),  # noqa: B023 (awaited at once)
                what="the command",
            )
            assert taken.redelivered is delivered_before
            await taker.close()  # unacked: RabbitMQ requeues it, flagged redelivered

        await start_worker(settings)
        again = await _next_reply(replies)
        assert again == first  # the original rejection, not a new decision
        # A retry copy (our attempts header, not `redelivered`) is answered from it too.
        retried = await send(add, headers={failures.ATTEMPTS: 1})
        assert retried == first
        # …while a new AddItem for the order is accepted: the order really has changed.
        assert (
            await send(command("AddItem", "o-late", sku="SKU-2", quantity=1, unit_price="2.00"))
        )["status"] == "accepted"

    events = await stream_of(reader, "o-late")
    assert [(e.type, e.data.get("sku")) for e in events] == [
        ("OrderCreated", None),
        ("ItemAdded", "SKU-2"),
    ]
    # the rejection is recorded in the order's stream itself, before the order existed
    record, *_ = await reader.read_stream(ORDERS.stream("o-late"))
    assert record.type == COMMAND_REJECTED
    assert record.data["command_id"] == add["command_id"]


async def test_a_command_without_an_id_stays_invalid_when_moved_back(
    settings: Settings,
    start_worker: StartWorker,
    management: Management,
    test_vhost: str,
    reader: SqliteEventStore,
) -> None:
    """Published without command_id or message_id (as the console does), a command is
    invalid. Its dead-letter copy gets a message_id from the publishing client; moved
    back, that invented id must not make it valid and applied."""
    await start_worker(settings)
    body = json.dumps({"type": "CreateOrder", "order_id": "o-noid", "customer_id": "c"})
    management.publish(test_vhost, settings.command_queue, body.encode())
    first = await eventually(lambda: dlq_messages(management, test_vhost, settings))
    assert first[0]["properties"]["headers"][failures.ERROR_TYPE] == "MissingCommandId"
    assert first[0]["properties"]["headers"][failures.NO_MESSAGE_ID] is True

    first_failure = first[0]["properties"]["headers"][failures.FIRST_FAILURE_AT]
    async with ManagementApi.from_settings(settings) as api:
        moved = await dead_letters.redrive(settings, api, f"{settings.command_queue}.dlq")
    assert moved.moved == 1

    def dead_again() -> list[dict[str, Any]] | None:
        dead = dlq_messages(management, test_vhost, settings)
        later = [
            m for m in dead if m["properties"]["headers"][failures.FIRST_FAILURE_AT] > first_failure
        ]
        return later or None

    # Each look at the DLQ returns its message to the queue: look slowly.
    dead = await eventually(dead_again, interval=0.5, what="the message dead-lettered again")
    assert dead[0]["properties"]["headers"][failures.ERROR_TYPE] == "MissingCommandId"
    assert await stream_of(reader, "o-noid") == []
