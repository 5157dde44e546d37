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
from kurrentdbclient import AsyncKurrentDBClient, StreamState
from kurrentdbclient import NewEvent as KurrentNewEvent
from kurrentdbclient.exceptions import NodeIsNotLeaderError

from conveyor.aggregates import AGGREGATES
from conveyor.application.commands import CommandEnvelope, CommandHandler
from conveyor.eventstore.kurrentdb import UNDECODABLE_DATA, KurrentDBEventStore
from conveyor.eventstore.port import (
    NO_STREAM,
    ConcurrencyError,
    EventStoreUnavailable,
    NewEvent,
    Snapshot,
)
from domain.orders.commands import CreateOrder
from messaging.customers import IntegrationMapper
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
    directory = IntegrationMapper(store, AGGREGATES)
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
        CommandHandler(store, AGGREGATES).handle(envelope),
        CommandHandler(store, AGGREGATES).handle(envelope),
    )
    assert sorted(o.status for o in outcomes) == ["accepted", "duplicate"]
    assert len(node.streams.stream("order-o-race")) == 1


# ------------------------------------- review: foreign metadata never halts the relay either


@pytest.mark.parametrize(
    "occurred_at",
    [
        '"yesterday"',
        '"Tue, 01 Dec 2026 10:00:00 GMT"',
        '"2026-13-45T99:00:00"',
        '"0001-01-01T00:00:00+01:00"',  # parses, but lies before the first UTC instant
    ],
)
async def test_foreign_events_whose_metadata_time_is_not_iso_are_passed_on_with_the_server_time(
    node: ScriptedNode, store: KurrentDBEventStore, occurred_at: str
) -> None:
    # Served by the library's own servicers: this shows what the adapter does with what the
    # client library hands it. Another application's metadata may use our key its own way;
    # like its data, that must not stop whoever follows the log (the gateway retried the
    # same position forever, a rebuild failed).
    node.streams.add("order-o-1", "OrderCreated", b'{"customer_id": "alice"}')
    node.streams.add("billing-1", "Invoiced", b"{}", f'{{"occurred_at": {occurred_at}}}'.encode())
    node.streams.add("order-o-1", "OrderConfirmed", b"{}")

    page = await store.read_all()

    assert [e.stream_id for e in page] == ["order-o-1", "billing-1", "order-o-1"]
    assert page[1].occurred_at == datetime.fromtimestamp(0, tz=UTC)  # the fake's "created"
    assert await IntegrationMapper(store, AGGREGATES).integration_event(page[1]) is None


async def test_a_foreign_event_nested_too_deep_to_decode_is_passed_on_empty(
    node: ScriptedNode, store: KurrentDBEventStore
) -> None:
    # Served by the library's own servicers (adapter handling only). Any user may write an
    # ordinary stream by default: JSON nested deeper than the decoder's stack (RecursionError,
    # not ValueError) in another application's data or metadata must not stop the relay.
    nested = b"[" * 100_000 + b"]" * 100_000
    node.streams.add("billing-1", "Invoiced", nested)
    node.streams.add("billing-2", "Invoiced", b"{}", nested)
    node.streams.add("order-o-1", "OrderCreated", b'{"customer_id": "alice"}')

    page = await store.read_all()

    assert [e.stream_id for e in page] == ["billing-1", "billing-2", "order-o-1"]
    assert page[0].data == {}
    assert UNDECODABLE_DATA in page[0].metadata
    assert page[1].data == {}
    assert page[1].metadata == {}


# ------------------------------------------ review: only the leader serves conveyor's calls


async def test_library_follows_not_leader_on_append_only_when_preferring_the_leader() -> None:
    # The library's own behaviour, shown with its own servicers: appends always ask for the
    # leader, but autoreconnect follows the "not leader" answer only when the URI prefers
    # the leader. With any other nodePreference every append on a follower fails for good.
    async with ScriptedNode() as follower, ScriptedNode() as leader:
        follower.gossip.leader_port = leader.port
        follower.gossip.follower_port = follower.port
        follower.streams.append_failures.append(not_leader(leader))
        client = AsyncKurrentDBClient(
            f"kurrentdb://127.0.0.1:{follower.port},127.0.0.1:{leader.port}"
            "?tls=false&nodePreference=follower"
        )
        await client.connect()
        try:
            with pytest.raises(NodeIsNotLeaderError):
                await client.append_to_stream(
                    "order-1",
                    events=[KurrentNewEvent("T", b"{}")],
                    current_version=StreamState.NO_STREAM,
                )
        finally:
            await client.close()
        assert leader.streams.appends == 0


@pytest.mark.parametrize("preference", ["follower", "random", "readonlyreplica"])
def test_a_store_refuses_a_node_preference_other_than_the_leader(preference: str) -> None:
    # Appends could never follow the leader (above), and reads from a follower may lag
    # behind the log: the gateway's customer lookup would find no order and skip its event.
    with pytest.raises(ValueError, match="nodePreference") as refused:
        KurrentDBEventStore(
            f"kurrentdb://u:secret@n1:2113,n2:2113?tlsCaFile=/ca.pem&nodePreference={preference}"
        )
    assert "secret" not in str(refused.value)


# ------------------------------------------------ review: a leader change and a close mid-call


async def test_an_append_written_by_the_old_leader_whose_answer_was_lost_is_accepted_once() -> None:
    # Served by the library's own servicers (the library's retry, not a server's election):
    # the old leader writes, its answer is lost, gossip now names the new leader, and the
    # library re-sends there. The handler must answer accepted, and the event exist once.
    async with ScriptedNode() as old, ScriptedNode() as new:
        new.streams.log = old.streams.log  # one log, as a cluster's nodes hold
        store = KurrentDBEventStore(
            f"kurrentdb://127.0.0.1:{old.port},127.0.0.1:{new.port}?tls=false", timeout=10
        )
        await store.open()
        try:
            old.streams.lost_append_answers = 1
            for gossip in (old.gossip, new.gossip):
                gossip.leader_port, gossip.follower_port = new.port, old.port
            handler = CommandHandler(store, AGGREGATES)
            envelope = CommandEnvelope(CreateOrder("o-1", "alice"), "cmd-1", "corr", "cmd-1")
            first = await handler.handle(envelope)
            again = await handler.handle(envelope)
        finally:
            await store.close()
        assert (old.streams.appends, new.streams.appends) == (1, 1)
        assert (first.status, first.version) == ("accepted", 1)
        assert (again.status, again.version) == ("duplicate", 1)
        assert len(old.streams.stream("order-o-1")) == 1


async def test_a_read_the_store_is_closed_under_says_so(
    node: ScriptedNode, store: KurrentDBEventStore
) -> None:
    # Served by the library's own servicers (adapter handling only). Closing the client
    # stops its reads without an error; the adapter's retry then met the library's
    # AttributeError ("no attribute '_connection'") instead of a message that says why.
    fill(node.streams, "order-1", 50)
    node.streams.event_delay = 0.02

    async def close_midway() -> None:
        await asyncio.sleep(0.2)
        await store.close()

    with pytest.raises(RuntimeError, match="closed during"):
        await asyncio.gather(store.read_stream("order-1"), close_midway())


async def test_a_leader_change_between_the_reads_of_one_log_page_leaves_the_page_whole() -> None:
    # Served by the library's own servicers (the library's leader following, not a server's
    # election). Every other event is system-typed, dropped on our side, so one page of the
    # gateway takes several reads; the leader moves while the first is being served.
    async with ScriptedNode() as first, ScriptedNode() as second:
        second.streams.log = first.streams.log
        for n in range(200):
            if n % 2:
                first.streams.add("other-1", "$>", b"0@order-1")
            else:
                first.streams.add("order-1", "ItemAdded", json.dumps({"n": n}).encode())
        for gossip in (first.gossip, second.gossip):
            gossip.leader_port, gossip.follower_port = first.port, second.port
        store = KurrentDBEventStore(
            f"kurrentdb://127.0.0.1:{first.port},127.0.0.1:{second.port}?tls=false", timeout=10
        )
        await store.open()
        try:
            first.streams.event_delay = 0.005
            page = asyncio.ensure_future(store.read_all(limit=80))
            await asyncio.sleep(0.1)  # the first read takes about 0.4 s
            for gossip in (first.gossip, second.gossip):
                gossip.leader_port, gossip.follower_port = second.port, first.port
            first.streams.read_failures.append(not_leader(second))
            assert [e.version for e in await page] == list(range(1, 81))
        finally:
            await store.close()
        assert second.streams.reads >= 1


# ----------------------------------- review: a node mid-election is unavailable, not a crash

NO_LEADER_YET = (grpc.StatusCode.UNKNOWN, "No leader info available in response", ())
WRITE_TIMED_OUT = (grpc.StatusCode.ABORTED, "Operation timed out: CommitTimeout", ())


@pytest.mark.parametrize("failure", [NO_LEADER_YET, WRITE_TIMED_OUT], ids=["no-leader", "timeout"])
async def test_answers_of_a_node_between_leaders_or_overloaded_are_unavailable(
    node: ScriptedNode, store: KurrentDBEventStore, failure: tuple[grpc.StatusCode, str, tuple[()]]
) -> None:
    # Served by the library's own servicers, answering with the statuses KurrentDB's
    # RpcExceptions use: NoLeaderInfo (UNKNOWN) while a cluster has no leader yet, Timeout
    # (ABORTED) for a write that timed out. The library raises UnknownError and
    # AbortedByServerError, which are neither retried nor GrpcErrors: they escaped raw,
    # where every other transient failure is EventStoreUnavailable.
    fill(node.streams, "order-1", 1)
    for _ in range(4):  # more than the library's own retries
        node.streams.read_failures.append(failure)
    with pytest.raises(EventStoreUnavailable, match=failure[1]):
        await store.read_stream("order-1")
    node.streams.read_failures.clear()
    node.streams.append_failures.extend([failure] * 4)
    with pytest.raises(EventStoreUnavailable, match=failure[1]):
        await store.append("order-1", 1, [order_event(1)])
    assert len(node.streams.stream("order-1")) == 1


@pytest.mark.parametrize(
    "reason", ["Server Is Not Ready", "Server Is Busy", "No leader info available in response"]
)
async def test_a_write_the_node_did_not_handle_is_unavailable(
    node: ScriptedNode, store: KurrentDBEventStore, reason: str
) -> None:
    # Served by the library's own servicers, answering as KurrentDB's BatchAppend answers a
    # write it did not handle (Streams.BatchAppend.cs, NotHandled): an error inside the
    # response, message only. The library cannot name it and raises its base
    # KurrentDBClientError, which escaped the adapter raw, though nothing was written and
    # the node will take the write later (after an election, once it has caught up).
    node.streams.append_not_handled.append(reason)
    with pytest.raises(EventStoreUnavailable, match=reason):
        await store.append("order-1", NO_STREAM, [order_event(1)])
    assert node.streams.stream("order-1") == []
    assert (await store.append("order-1", NO_STREAM, [order_event(1)])).version == 1


async def test_snapshots_go_to_a_capped_stream_of_their_own_through_the_library(
    node: ScriptedNode, store: KurrentDBEventStore
) -> None:
    """What the adapter asks of the library for snapshots: the stream named as
    kurrentdbclient's docs suggest, its metadata capped at one event before the first
    write, the version and schema version in the event's metadata, the latest read
    backwards; and a stream's tail read from a stream position. (What the server does
    with $maxCount is the contract suite's, against a real KurrentDB.)"""
    fill(node.streams, "inventory-SKU-1", 5)
    taken = datetime(2026, 1, 2, tzinfo=UTC)
    await store.save_snapshot(Snapshot("inventory-SKU-1", 4, 3, {"on_hand": 7}, taken))
    (metadata,) = node.streams.stream("$$snapshot-$inventory-SKU-1")
    assert json.loads(metadata.data) == {"$maxCount": 1}
    (written,) = node.streams.stream("snapshot-$inventory-SKU-1")
    assert written.type == "Snapshot"
    assert json.loads(written.metadata)["version"] == 4
    await store.save_snapshot(Snapshot("inventory-SKU-1", 2, 3, {"on_hand": 1}, taken))
    assert len(node.streams.stream("snapshot-$inventory-SKU-1")) == 1  # older: not written
    await store.save_snapshot(Snapshot("inventory-SKU-1", 5, 3, {"on_hand": 9}, taken))
    loaded = await store.load_snapshot("inventory-SKU-1")
    assert loaded == Snapshot("inventory-SKU-1", 5, 3, {"on_hand": 9}, taken)
    assert await store.load_snapshot("inventory-SKU-2") is None
    tail = await store.read_stream("inventory-SKU-1", after_version=3)
    assert [e.version for e in tail] == [4, 5]
