"""The core knows no aggregate: a test-only aggregate (tests/toy_aggregate.py), registered
beside Order, runs through the real command handler on a real SQLite store, has its
rejections recorded and final, and its events pass the gateway's contract check — with no
change to the shared machinery."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.aggregates import AGGREGATES
from conveyor.aggregates.orders import ORDERS
from conveyor.application.aggregates import Registry
from conveyor.application.commands import CommandHandler
from conveyor.application.history import aggregate_history
from conveyor.application.rejections import COMMAND_REJECTED
from conveyor.eventstore.sqlite import SqliteEventStore
from messaging.command_messages import InvalidCommandMessage, parse_command
from messaging.customers import IntegrationMapper
from messaging.integration_events import decode, encode
from tests.toy_aggregate import COUNTERS

REGISTRY = Registry(ORDERS, COUNTERS)


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    event_store = await SqliteEventStore(tmp_path / "events.db").open()
    yield event_store
    await event_store.close()


async def test_a_test_only_aggregate_runs_through_the_real_handler_and_gateway(
    store: SqliteEventStore,
) -> None:
    handler = CommandHandler(store, REGISTRY)

    def parse(**fields: object) -> object:
        return parse_command(body(**fields), aggregate=COUNTERS)

    early = await handler.handle(parse(type="Bump", command_id="b-0", counter_id="k", by=5))  # type: ignore[arg-type]
    assert (early.status, early.rule, early.as_message()["counter_id"]) == (
        "rejected",
        "counter_not_open",
        "k",
    )
    opened = await handler.handle(parse(type="Open", command_id="open", counter_id="k"))  # type: ignore[arg-type]
    bumped = await handler.handle(parse(type="Bump", command_id="b-1", counter_id="k", by=2))  # type: ignore[arg-type]
    assert [(o.status, o.version) for o in (opened, bumped)] == [("accepted", 1), ("accepted", 2)]
    assert opened.routing_key_prefix == "counters."
    again = await handler.handle(parse(type="Bump", command_id="b-0", counter_id="k", by=5))  # type: ignore[arg-type]
    assert (again.status, again.replayed) == ("rejected", True)  # final, though now open

    stream = await store.read_stream("counter-k")
    assert [e.type for e in stream] == [COMMAND_REJECTED, "Opened", "Bumped"]
    history = await aggregate_history(store, COUNTERS, "k")
    assert (history.state.total, history.state.version) == (2, 2)

    # an Order command in the same registry and store, by the same handler
    order = parse_command(
        body(type="CreateOrder", command_id="c", order_id="o-1", customer_id="alice"),
        aggregate=ORDERS,
    )
    assert (await handler.handle(order)).status == "accepted"

    # the gateway's contract check: the registry decides what is published, and how
    mapper = IntegrationMapper(store, REGISTRY)
    published = [await mapper.integration_event(e) for e in await store.read_all()]
    events = [e for e in published if e is not None]
    assert [(e.routing_key, e.version) for e in events] == [
        ("counters.opened", 1),
        ("counters.bumped", 2),
        ("orders.created", 1),
    ]
    assert mapper.skipped == 0
    wire = json.loads(encode(events[1]))
    assert (wire["aggregate"], wire["aggregate_id"], wire["data"]) == ("counter", "k", {"by": 2})
    assert "order_id" not in wire
    assert decode(encode(events[1]), REGISTRY) == events[1]

    # the application's own registry does not know the counter: its events are skipped
    unknown = IntegrationMapper(store, AGGREGATES)
    assert [await unknown.integration_event(e) for e in stream[1:]] == [None, None]
    assert unknown.skipped == 2


def test_a_command_of_another_aggregate_is_invalid_on_this_queue() -> None:
    with pytest.raises(InvalidCommandMessage) as refused:
        parse_command(body(type="CreateOrder", order_id="o", customer_id="c"), aggregate=COUNTERS)
    assert refused.value.error_type == "UnknownCommandType"


def test_the_registry_refuses_clashing_aggregates() -> None:
    with pytest.raises(ValueError, match="share a name"):
        Registry(COUNTERS, COUNTERS)
