"""How the KurrentDB adapter copes with what kurrentdbclient does (issue 14).

Served by kurrentdbclient's own generated gRPC servicers, scripted per test
(tests/unit/kurrentdbclient_servicers.py): these tests prove the adapter's handling of the
client *library*, not anything about KurrentDB itself, which the contract suite covers
against a real server.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from kurrentdbclient import AsyncKurrentDBClient

from application.commands import CommandEnvelope, CommandHandler
from domain.commands import CreateOrder
from eventstore.kurrentdb import UNDECODABLE_DATA, KurrentDBEventStore
from eventstore.port import NO_STREAM, ConcurrencyError, EventStoreUnavailable, NewEvent
from gateway.customers import CustomerDirectory
from tests.unit.kurrentdbclient_servicers import (
    ScriptedNode,
    ScriptedStreams,
    not_leader,
    unavailable,
)

pytestmark = pytest.mark.timeout(60)


def order_event(n: int) -> NewEvent:
    return NewEvent(
        event_id=uuid.uuid4(),
        type="ItemAdded",
        data={"sku": f"SKU-{n}", "quantity": 1, "unit_price": "1.00"},
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        metadata={"command_id": f"c-{n}"},
    )


def fill(streams: ScriptedStreams, stream: str, count: int) -> None:
    for n in range(count):
        streams.add(stream, "ItemAdded", json.dumps({"n": n}).encode())


@pytest.fixture
async def node() -> AsyncIterator[ScriptedNode]:
    async with ScriptedNode() as served:
        yield served


@pytest.fixture
async def store(node: ScriptedNode) -> AsyncIterator[KurrentDBEventStore]:
    opened = KurrentDBEventStore(node.uri, timeout=10, probe_timeout=5)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


# ------------------------------------------------- defect 1: reads cut short by a reconnect


async def _reconnect_midway(store: KurrentDBEventStore, node: ScriptedNode) -> None:
    """Another component's append meets UNAVAILABLE: the library reconnects the shared
    client, closing the connection the read is using."""
    await asyncio.sleep(0.2)
    node.streams.append_failures.append(unavailable())
    await store.append(f"order-{uuid.uuid4()}", NO_STREAM, [order_event(0)])


async def test_a_stream_read_cut_short_by_a_reconnect_is_read_again_whole(
    node: ScriptedNode, store: KurrentDBEventStore
) -> None:
    fill(node.streams, "order-1", 50)
    node.streams.event_delay = 0.02
    read, _ = await asyncio.gather(store.read_stream("order-1"), _reconnect_midway(store, node))
    assert [e.version for e in read] == list(range(1, 51))


async def test_a_log_read_cut_short_by_a_reconnect_is_read_again_whole(
    node: ScriptedNode, store: KurrentDBEventStore
) -> None:
    fill(node.streams, "order-1", 50)
    node.streams.event_delay = 0.02
    page, _ = await asyncio.gather(store.read_all(limit=50), _reconnect_midway(store, node))
    assert [e.version for e in page] == list(range(1, 51))


async def test_reads_cut_short_by_every_reconnect_raise_unavailable_never_a_short_result(
    node: ScriptedNode, store: KurrentDBEventStore
) -> None:
    fill(node.streams, "order-1", 40)
    node.streams.event_delay = 0.03
    done = asyncio.Event()

    async def keep_reconnecting() -> None:
        while not done.is_set():
            node.streams.append_failures[:] = [unavailable()] * 4
            with pytest.raises(EventStoreUnavailable):
                await store.append(f"order-{uuid.uuid4()}", NO_STREAM, [order_event(0)])

    churn = asyncio.ensure_future(keep_reconnecting())
    try:
        with pytest.raises(EventStoreUnavailable, match="replaced during a read"):
            await store.read_stream("order-1")
        with pytest.raises(EventStoreUnavailable, match="replaced during a read"):
            await store.read_all(limit=40)
    finally:
        done.set()
        await churn


# ------------------------------------------- defect 2: read_all and the probe follow the leader


async def test_the_probe_and_read_all_reconnect_after_unavailable(node: ScriptedNode) -> None:
    fill(node.streams, "order-1", 3)
    node.streams.read_failures.append(unavailable())
    store = KurrentDBEventStore(node.uri, timeout=10, probe_timeout=5)
    await store.open()  # the probe met UNAVAILABLE first
    try:
        node.streams.read_failures.append(unavailable())
        assert len(await store.read_all()) == 3
        node.streams.read_failures.append(unavailable())
        assert await store.head_position() == node.streams.log[-1].commit_position
        node.streams.read_failures.append(unavailable())
        await store.ping()
    finally:
        await store.close()


async def test_the_probe_and_read_all_follow_a_not_leader_answer_to_the_leader() -> None:
    async with ScriptedNode() as first, ScriptedNode() as second:
        second.streams.log = first.streams.log  # one log, as a cluster's nodes hold
        fill(first.streams, "order-1", 3)
        # Gossip names the first node leader, which then answers "not leader, ask second".
        first.streams.read_failures.append(not_leader(second))
        store = KurrentDBEventStore(
            f"kurrentdb+discover://127.0.0.1:{first.port}?tls=false", timeout=10
        )
        await store.open()
        try:
            assert second.streams.reads == 1  # the probe went on to the leader
            # An election later, the leader moves back.
            second.streams.read_failures.append(not_leader(first))
            assert len(await store.read_all()) == 3
            assert first.streams.reads == 2
        finally:
            await store.close()


# --------------------------------------------- defect 3: foreign data never halts the relay


async def test_foreign_events_whose_data_is_not_a_json_object_are_passed_on_empty(
    node: ScriptedNode, store: KurrentDBEventStore
) -> None:
    node.streams.add("order-o-1", "OrderCreated", b'{"customer_id": "alice"}')
    node.streams.add("billing-1", "Invoiced", b"\xff\xfe binary")
    node.streams.add("billing-2", "Invoiced", b"[1, 2, 3]")
    node.streams.add("billing-3", "Invoiced", b"not json at all")
    node.streams.add("order-o-1", "OrderConfirmed", b"{}")

    page = await store.read_all()

    assert [e.stream_id for e in page] == [
        "order-o-1",
        "billing-1",
        "billing-2",
        "billing-3",
        "order-o-1",
    ]
    foreign = page[1:4]
    assert all(e.data == {} and UNDECODABLE_DATA in e.metadata for e in foreign)
    assert UNDECODABLE_DATA not in page[0].metadata
    directory = CustomerDirectory(store)
    assert [await directory.integration_event(e) for e in foreign] == [None, None, None]
    assert directory.skipped == 3


async def test_reading_one_of_our_streams_still_refuses_data_that_is_not_a_json_object(
    node: ScriptedNode, store: KurrentDBEventStore
) -> None:
    node.streams.add("order-o-1", "OrderCreated", b"[1]")
    with pytest.raises(ValueError, match="does not hold a JSON object"):
        await store.read_stream("order-o-1")


# ------------------------------------------------ defect 5: refused access, and open() cleanup


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED]
)
async def test_refused_access_is_one_clear_error_and_open_closes_the_client(
    node: ScriptedNode, monkeypatch: pytest.MonkeyPatch, code: grpc.StatusCode
) -> None:
    closed: list[AsyncKurrentDBClient] = []
    close = AsyncKurrentDBClient.close

    async def recording_close(client: AsyncKurrentDBClient) -> None:
        closed.append(client)
        await close(client)

    monkeypatch.setattr(AsyncKurrentDBClient, "close", recording_close)
    node.streams.read_failures.append((code, "Access denied", ()))
    store = KurrentDBEventStore(node.uri, timeout=10)
    with pytest.raises(EventStoreUnavailable, match=r"refused access.*read \$all"):
        await store.open()
    assert len(closed) == 1

    await store.open()
    try:
        node.streams.read_failures.append((code, "Access denied", ()))
        with pytest.raises(EventStoreUnavailable, match="refused access"):
            await store.read_all()
    finally:
        await store.close()


async def test_the_readiness_probe_needs_no_permission_to_read_all(node: ScriptedNode) -> None:
    # Only $admins may read $all by default: command workers and the query API, which never
    # read it, must start with a user that may not either.
    store = KurrentDBEventStore(node.uri, timeout=10)
    await store.open()
    try:
        await store.ping()
    finally:
        await store.close()
    assert node.streams.read_targets
    assert "$all" not in node.streams.read_targets


async def test_open_gives_up_within_the_probe_timeout_when_discovery_hangs(
    node: ScriptedNode,
) -> None:
    node.gossip.hang = True
    store = KurrentDBEventStore(
        f"kurrentdb+discover://127.0.0.1:{node.port}?tls=false", probe_timeout=0.5
    )
    started = time.monotonic()
    with pytest.raises(EventStoreUnavailable, match=r"did not answer within 0\.5s"):
        await asyncio.wait_for(store.open(), 15)
    assert time.monotonic() - started < 5


# ------------------------------------------------------------------ also: deleted streams


async def test_a_deleted_stream_reads_as_missing_and_refuses_appends_clearly(
    node: ScriptedNode, store: KurrentDBEventStore
) -> None:
    node.streams.deleted.add("order-gone")
    assert await store.read_stream("order-gone") == []
    with pytest.raises(ValueError, match="was deleted"):
        await store.append("order-gone", NO_STREAM, [order_event(1)])


# ------------------------------------------------- also: a racing duplicate reports a conflict


async def test_the_second_identical_append_at_one_version_is_a_conflict_not_a_success(
    node: ScriptedNode, store: KurrentDBEventStore
) -> None:
    events = [order_event(1), order_event(2)]
    first = await store.append("order-dup", NO_STREAM, events)
    assert first.version == 2
    with pytest.raises(ConcurrencyError):
        await store.append("order-dup", NO_STREAM, events)
    assert len(node.streams.stream("order-dup")) == 2
    # The client retrying its own append after a lost answer is still that append's success.
    node.streams.lost_append_answers = 1
    retried = await store.append("order-dup", 2, [order_event(3)])
    assert retried.version == 3
    assert len(node.streams.stream("order-dup")) == 3


async def test_two_racing_copies_of_one_command_answer_accepted_then_duplicate(
    node: ScriptedNode, store: KurrentDBEventStore
) -> None:
    # Two worker processes (two handlers, no shared lock) load the order before either
    # appends, decide the same events (same derived ids) and append at the same version.
    node.streams.read_delay = 0.2
    envelope = CommandEnvelope(CreateOrder("o-race", "alice"), "cmd-race", "corr", "cmd-race")
    outcomes = await asyncio.gather(
        CommandHandler(store).handle(envelope), CommandHandler(store).handle(envelope)
    )
    assert sorted(o.status for o in outcomes) == ["accepted", "duplicate"]
    assert len(node.streams.stream("order-o-race")) == 1
