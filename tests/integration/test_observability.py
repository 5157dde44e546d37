"""Metrics, health, message ids in log lines and tracing of a worker process, against the
real RabbitMQ.

Metrics live in the process's default registry, shared by every WorkerHost a test starts:
each test's queues have their own names (so per-queue series start at zero and are checked
exactly) and process-wide series are compared before and after.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aio_pika
import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from conveyor.aggregates.orders import ORDERS
from conveyor.bootstrap import build_broker, projection_queue
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.observability import tracing
from conveyor.observability.logs import log_handler
from conveyor.operations.management import ManagementApi
from conveyor.readmodels.projections import ORDER_PROJECTIONS
from conveyor.settings import Settings
from tests.integration.test_command_worker import RefusedAppends
from tests.rabbit import MANAGEMENT_URL, eventually, publish
from workers.host import WorkerHost

pytestmark = pytest.mark.rabbitmq

StartWorker = Callable[..., Awaitable[WorkerHost]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def ops_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"ops_port": 0})


def command(type_: str, order_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "command_id": str(uuid.uuid4()), "order_id": order_id, **fields}


async def get(host: WorkerHost, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{host.ops_port}") as client:
        return await client.get(path)


async def scrape(host: WorkerHost) -> Samples:
    response = await get(host, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def metric(host: WorkerHost, name: str, **labels: str) -> float:
    return value(await scrape(host), name, **labels)


async def reaches(host: WorkerHost, expected: float, name: str, **labels: str) -> None:
    async def check() -> bool:
        return await metric(host, name, **labels) >= expected

    await eventually(check, within=15, what=f"{name}{labels} >= {expected}")


HANDLED = "conveyor_messages_handled_total"


async def test_metrics_count_every_outcome_of_the_command_worker(
    ops_settings: Settings, start_worker: StartWorker, amqp_url: str
) -> None:
    ops_settings = ops_settings.model_copy(update={"conflict_attempts": 1})
    host = await start_worker(ops_settings)
    queue = ops_settings.command_queue
    appends_before = await metric(host, "conveyor_event_store_append_seconds_count")

    create = command("CreateOrder", "o-m", customer_id="alice")
    await publish(amqp_url, queue, create)
    await reaches(host, 1, HANDLED, queue=queue, type="CreateOrder", outcome="accepted")
    await publish(amqp_url, queue, create)
    await reaches(host, 1, HANDLED, queue=queue, type="CreateOrder", outcome="duplicate")
    await publish(amqp_url, queue, command("RemoveItem", "o-m", sku="SKU-404"))
    await reaches(host, 1, HANDLED, queue=queue, type="RemoveItem", outcome="rejected")
    await publish(amqp_url, queue, b"{not json", content_type="application/json")
    dead = "conveyor_messages_dead_lettered_total"
    await reaches(host, 1, dead, queue=queue, error_type="MalformedJSON")

    # A failure of the message: the store refuses its append, it is retried, then applied.
    lock = RefusedAppends(ops_settings.event_store, "o-m")
    try:
        await publish(
            amqp_url,
            queue,
            command("AddItem", "o-m", sku="SKU-1", quantity=1, unit_price="1.00"),
        )
        retried = "conveyor_messages_retried_total"
        await reaches(host, 1, retried, queue=queue, error_type="ConcurrencyError")
    finally:
        lock.release()
    await reaches(host, 1, HANDLED, queue=queue, type="AddItem", outcome="accepted")

    samples = await scrape(host)
    handled = {
        (dict(labels)["type"], dict(labels)["outcome"]): count
        for (name, labels), count in samples.items()
        if name == HANDLED and dict(labels)["queue"] == queue
    }
    assert handled == {
        ("CreateOrder", "accepted"): 1,
        ("CreateOrder", "duplicate"): 1,
        ("RemoveItem", "rejected"): 1,
        ("AddItem", "accepted"): 1,
    }
    assert value(samples, dead, queue=queue, error_type="MalformedJSON") == 1
    retries = value(
        samples, "conveyor_messages_retried_total", queue=queue, error_type="ConcurrencyError"
    )
    # every delivery is timed: 4 outcomes, 1 dead letter, each failed attempt of AddItem
    assert value(samples, "conveyor_message_handling_seconds_count", queue=queue) == 5 + retries
    assert value(samples, "conveyor_messages_unsettled_total", queue=queue) == 0
    # appends: CreateOrder, the record of the RemoveItem rejection, each attempt of AddItem
    # (the failed ones too)
    appends = value(samples, "conveyor_event_store_append_seconds_count") - appends_before
    assert appends == 3 + retries


async def test_ready_and_live_while_up_and_not_ready_while_the_broker_connection_is_down(
    ops_settings: Settings, start_worker: StartWorker, amqp_url: str, test_vhost: str
) -> None:
    host = await start_worker(ops_settings)
    queue = ops_settings.command_queue
    assert (await get(host, "/health/live")).status_code == 200
    ready = await get(host, "/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "failed": [],
        "checks": {
            "broker": "ok",
            f"consumer:{queue}": "ok",
            # one consumer per registered aggregate's command queue
            "consumer:inventory.commands": "ok",
            "consumer:payments.commands": "ok",
            "event_store": "ok",
            "paused:event_store": "ok",  # consumers not paused for a store outage
        },
    }

    async with ManagementApi(MANAGEMENT_URL, test_vhost) as api:
        connections = await eventually(api.connections, what="the worker's connection listed")
        for connection in connections:  # the vhost is this test run's: only our worker's
            await api.close_connection(connection["name"], "test: connection dropped")

    async def status(code: int) -> httpx.Response | None:
        response = await get(host, "/health/ready")
        return response if response.status_code == code else None

    down = await eventually(lambda: status(503), within=5, what="not ready")
    assert "broker" in down.json()["failed"]
    assert (await get(host, "/health/live")).status_code == 200
    # aio-pika's robust connection reconnects (after 5 s) and restores the consumer
    await eventually(lambda: status(200), within=20, what="ready again")
    await publish(amqp_url, queue, command("CreateOrder", "o-back", customer_id="alice"))
    await reaches(host, 1, HANDLED, queue=queue, type="CreateOrder", outcome="accepted")


async def test_not_ready_when_the_broker_cancels_a_consumer(
    ops_settings: Settings, start_worker: StartWorker
) -> None:
    host = await start_worker(ops_settings)
    queue = ops_settings.command_queue
    assert (await get(host, "/health/ready")).status_code == 200
    connection = await aio_pika.connect(ops_settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue, if_unused=False, if_empty=False)

    async def not_ready() -> dict[str, Any] | None:
        response = await get(host, "/health/ready")
        return response.json() if response.status_code == 503 else None

    body = await eventually(not_ready, within=5, what="not ready")
    assert body["failed"] == [f"consumer:{queue}"]
    assert body["checks"][f"consumer:{queue}"] == "consumer cancelled by the broker"


async def test_not_ready_when_a_store_is_unreachable(
    ops_settings: Settings, start_worker: StartWorker
) -> None:
    host = await start_worker(ops_settings, ("projections",))
    assert (await get(host, "/health/ready")).status_code == 200
    assert host.read_store is not None
    await host.read_store.close()
    response = await get(host, "/health/ready")
    assert response.status_code == 503
    assert response.json()["failed"] == ["read_store"]
    assert "ReadStoreUnavailable" in response.json()["checks"]["read_store"]


@pytest.fixture
def log_lines() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """JSON and text log lines of the conveyor loggers, through the real handlers."""
    json_lines, text_lines = io.StringIO(), io.StringIO()
    handlers = [log_handler("json", json_lines), log_handler("text", text_lines)]
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in ("conveyor.commands", "conveyor.projections")]
    levels = [logger.level for logger in loggers]
    for handler in handlers:
        root.addHandler(handler)
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    yield json_lines, text_lines
    for handler in handlers:
        root.removeHandler(handler)
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


async def test_correlation_and_causation_flow_from_command_to_read_models(
    ops_settings: Settings,
    start_worker: StartWorker,
    amqp_url: str,
    reader: SqliteEventStore,
    log_lines: tuple[io.StringIO, io.StringIO],
) -> None:
    host = await start_worker(ops_settings, ("commands", "gateway", "projections"))
    published_before = await metric(host, "conveyor_gateway_events_published_total")
    correlation_id, command_id = f"corr-{uuid.uuid4().hex[:8]}", f"cmd-{uuid.uuid4().hex[:8]}"
    create = command("CreateOrder", "o-corr", customer_id="alice") | {
        "command_id": command_id,
        "correlation_id": correlation_id,
    }
    await publish(amqp_url, ops_settings.command_queue, create)
    for projection in ORDER_PROJECTIONS:
        queue = projection_queue(ops_settings, projection).name
        await reaches(host, 1, HANDLED, queue=queue, type="OrderCreated", outcome="applied")

    [stored] = await reader.read_stream(ORDERS.stream("o-corr"))
    assert stored.metadata["correlation_id"] == correlation_id
    assert stored.metadata["causation_id"] == command_id

    json_lines, text_lines = log_lines
    records = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    ours = [r for r in records if r.get("correlation_id") == correlation_id]
    assert all(r["causation_id"] == command_id for r in ours)
    by_logger = {r["logger"] for r in ours}
    assert by_logger == {"conveyor.commands", "conveyor.projections"}, records
    # one line per read model, each from decoding the integration event's body
    applied = [r["message"] for r in ours if r["logger"] == "conveyor.projections"]
    assert sorted(m.split(":")[0] for m in applied) == sorted(p.name for p in ORDER_PROJECTIONS)
    ids = f"[correlation_id={correlation_id} causation_id={command_id}]"
    assert sum(ids in line for line in text_lines.getvalue().splitlines()) == len(ours)

    samples = await scrape(host)
    published = value(samples, "conveyor_gateway_events_published_total") - published_before
    assert published == 1
    assert value(samples, "conveyor_gateway_lag_seconds") == 0
    for projection in ORDER_PROJECTIONS:
        lag = ("conveyor_projection_lag_seconds", frozenset({("projection", projection.name)}))
        assert 0 <= samples[lag] < 30


async def test_tracing_when_enabled_records_spans_of_a_handled_command(
    ops_settings: Settings,
    start_worker: StartWorker,
    amqp_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()

    def in_memory() -> TracerProvider:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return provider

    monkeypatch.setattr(tracing, "build_tracer_provider", in_memory)
    host = await start_worker(ops_settings.model_copy(update={"tracing": True}))
    queue = ops_settings.command_queue
    await publish(amqp_url, queue, command("CreateOrder", "o-trace", customer_id="alice"))
    await reaches(host, 1, HANDLED, queue=queue, type="CreateOrder", outcome="accepted")
    spans = await eventually(exporter.get_finished_spans, what="spans")
    by_name = {span.name: span for span in spans}
    process = by_name.get(f"default.{queue} process")
    outcome = by_name.get("conveyor.command-outcomes.orders.command.accepted publish")
    assert process is not None, by_name
    assert outcome is not None, by_name
    # the outcome is published inside the handling of the command: one trace
    assert outcome.context.trace_id == process.context.trace_id


def test_tracing_is_off_by_default_and_costs_no_middleware(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse() -> TracerProvider:
        raise AssertionError("no tracer provider without CONVEYOR_TRACING")

    monkeypatch.setattr(tracing, "build_tracer_provider", refuse)
    assert settings.tracing is False
    assert list(build_broker(settings).middlewares) == []


def test_tracing_without_the_exporter_says_what_to_install(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    monkeypatch.setitem(sys.modules, exporter, None)  # import fails as if not installed
    with pytest.raises(RuntimeError, match=r"conveyor\[tracing\]"):
        build_broker(settings.model_copy(update={"tracing": True}))
