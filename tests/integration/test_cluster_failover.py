"""A worker given several RabbitMQ nodes (CONVEYOR_AMQP_URL=amqp://…@h1:p1,h2:p2,…/vhost)
starts on the first node that answers and, when its node closes the connection, carries on
through the next one. Here the "nodes" are the one development broker under different
names plus a port nobody listens on, so the test needs no cluster; the cluster itself is
exercised by the cluster chaos scenarios (tests/integration/test_chaos_cluster.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from conveyor.aggregates.orders import ORDERS
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.settings import Settings
from messaging.cluster import failover_broker
from tests.integration.test_cli import aconveyor
from tests.rabbit import Management, eventually, publish
from workers.host import WorkerHost

pytestmark = pytest.mark.rabbitmq

StartWorker = Callable[[Settings], Awaitable[WorkerHost]]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def with_hosts(url: str, hosts: list[str]) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{','.join(hosts)}"))


async def test_a_worker_fails_over_to_the_next_node_of_a_cluster_url(
    settings: Settings,
    start_worker: StartWorker,
    reader: SqliteEventStore,
    amqp_url: str,
    management: Management,
    test_vhost: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="conveyor.cluster")
    broker = urlsplit(amqp_url)
    down = f"127.0.0.1:{unused_port()}"
    first, second = f"127.0.0.1:{broker.port}", f"localhost:{broker.port}"
    cluster_url = with_hosts(amqp_url, [down, first, second])
    host = await start_worker(settings.model_copy(update={"amqp_url": cluster_url}))
    assert host.broker is not None
    connection = await host.broker.connect()
    # The node that refuses was skipped at start-up.
    assert (connection.url.host, connection.url.port) == ("127.0.0.1", broker.port)

    create = {"type": "CreateOrder", "command_id": "c-1", "order_id": "o-1", "customer_id": "x"}
    await publish(amqp_url, settings.command_queue, create)
    await eventually(lambda: reader.read_stream(ORDERS.stream("o-1")), what="OrderCreated")

    # The node goes away: it closes the worker's connection, as `rabbitmqctl stop_app` does.
    vhost_connections = await eventually(
        lambda: [c for c in management.get("/connections") if c["vhost"] == test_vhost],
        what="the worker's connection listed by the broker",
    )
    for listed in vhost_connections:
        management.delete(f"/connections/{quote(listed['name'], safe='')}")

    await eventually(
        lambda: connection.url.host == "localhost" and connection.connected.is_set(),
        within=30,
        what="the worker reconnected through the next node",
    )
    add = {
        "type": "AddItem",
        "command_id": "c-2",
        "order_id": "o-1",
        "sku": "SKU-1",
        "quantity": 1,
        "unit_price": "1.00",
    }
    await publish(amqp_url, settings.command_queue, add)
    events = await eventually(
        lambda: _two(reader.read_stream(ORDERS.stream("o-1"))), what="the second command applied"
    )
    assert [e.metadata["command_id"] for e in events] == ["c-1", "c-2"]
    # The line operators (and the cluster chaos scenarios) read: where to, after how long.
    assert re.search(
        rf"reconnected to RabbitMQ node localhost:{broker.port} [\d.]+s after losing node "
        rf"127\.0\.0\.1:{broker.port}",
        caplog.text,
    ), caplog.text


async def _two(read: Awaitable[list[object]]) -> list[object] | None:
    events = await read
    return events if len(events) >= 2 else None


async def test_a_cluster_url_with_no_node_answering_fails_at_start() -> None:
    url = f"amqp://guest:guest@127.0.0.1:{unused_port()},127.0.0.1:{unused_port()}/"
    broker = failover_broker(url)
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(broker.connect(), 30)
    await broker.stop()


async def test_conveyor_send_goes_through_the_first_node_that_answers(
    settings: Settings, start_worker: StartWorker, amqp_url: str
) -> None:
    await start_worker(settings)
    port = urlsplit(amqp_url).port
    cluster = settings.model_copy(
        update={
            "amqp_url": with_hosts(amqp_url, [f"127.0.0.1:{unused_port()}", f"127.0.0.1:{port}"])
        }
    )
    result = await aconveyor(
        cluster,
        "send",
        '{"type":"CreateOrder","order_id":"o-cli","customer_id":"c"}',
        "--wait",
        "--no-read-model",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "accepted"
