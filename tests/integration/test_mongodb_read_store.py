"""What the MongoDB adapter sends on the wire beyond the port's contract: its write concern,
which reads go to the primary, and its time limits. The real driver talks to the real
server (tests/mongodb.py); a command listener on that client records what went out."""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from conveyor.readmodels import mongodb
from conveyor.readmodels.mongodb import MongoReadModelStore
from conveyor.readmodels.port import ReadStoreUnavailable
from conveyor.settings import Settings
from tests.integration.test_gateway import store_orders
from tests.integration.test_projections import (
    integration_events,
    publish_events,
    read_models_settle,
)
from tests.mongodb import SecantusServer, with_database
from tests.rabbit import eventually, queue_depth
from workers.host import WorkerHost

StartWorker = Callable[..., Awaitable[WorkerHost]]
SYNC_ON_COMMIT = ("--sync-on-commit",)


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def named(self, *names: str) -> list[dict[str, Any]]:
        return [command for command in self.sent if next(iter(command)) in names]


Listen = Callable[[], Commands]


@pytest.fixture
def listen(monkeypatch: pytest.MonkeyPatch) -> Listen:
    """Attach a listener to the clients the adapter creates from now on."""

    def attach() -> Commands:
        commands = Commands()
        monkeypatch.setattr(
            mongodb,
            "AsyncMongoClient",
            functools.partial(AsyncMongoClient, event_listeners=[commands]),
        )
        return commands

    return attach


def with_options(url: str, options: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{options}"


async def exercise(store: MongoReadModelStore) -> None:
    """One of each kind of call a projection worker, a rebuild and a query make."""
    await store.ensure_collection("orders", [("status",)])
    await store.put("orders", "o-1", {"status": "pending"}, expected_rev=0)
    await store.put("orders", "o-1", {"status": "confirmed"}, expected_rev=1)
    await store.put_many("orders", {"o-2": {"status": "pending"}})
    await store.get("orders", "o-1")
    await store.get_many("orders", ["o-1", "o-2"])
    await store.find("orders", where={"status": "pending"})
    await store.count("orders")
    await store.list_collections()


WRITES = ("insert", "update", "createIndexes", "create")


async def test_writes_wait_for_a_majority_unless_the_url_says_otherwise(
    mongodb_url: str, listen: Listen
) -> None:
    # w:1 acknowledges a write a failover can roll back: the projection would ack its
    # message and the read model would silently miss that event.
    commands = listen()
    store = await MongoReadModelStore(mongodb_url).open()
    try:
        await exercise(store)
    finally:
        await store.close()
    writes = commands.named(*WRITES)
    assert {command["insert"] for command in commands.named("insert")} == {"orders"}
    assert writes
    assert [c.get("writeConcern", {}).get("w") for c in writes] == ["majority"] * len(writes)

    commands = listen()
    store = await MongoReadModelStore(with_options(mongodb_url, "w=1")).open()
    try:
        await store.put("orders", "o-3", {"status": "pending"}, expected_rev=0)
    finally:
        await store.close()
    assert [c["writeConcern"]["w"] for c in commands.named("insert")] == [1]


async def test_guard_pointer_and_lease_reads_go_to_the_primary_whatever_the_url_says(
    mongodb_url: str, listen: Listen
) -> None:
    commands = listen()
    store = await MongoReadModelStore(
        with_options(mongodb_url, "readPreference=secondaryPreferred")
    ).open()
    try:
        await exercise(store)
    finally:
        await store.close()
    by_kind = {
        "id reads (guards, pointers, leases, a rebuild's own writes)": [
            c for c in commands.named("find") if "_id" in c["filter"]
        ],
        "collection listing": commands.named("listCollections"),
    }
    for kind, sent in by_kind.items():
        assert sent, kind
        assert [c.get("$readPreference") for c in sent] == [None] * len(sent), kind
    # queries over many documents may still be served by a secondary, as configured
    queries = [c for c in commands.named("find", "aggregate") if "_id" not in c.get("filter", {})]
    assert queries
    assert {c["$readPreference"]["mode"] for c in queries} == {"secondaryPreferred"}


async def test_an_id_read_does_not_wait_for_a_secondary_that_is_not_there(
    mongodb_url: str,
) -> None:
    # The servers here are single-node replica sets: a read that insists on a secondary
    # finds none. Reads that must see the latest write never ask for one.
    url = with_options(mongodb_url, "readPreference=secondary&timeoutMS=300")
    store = await MongoReadModelStore(url).open()
    try:
        await store.ensure_collection("orders")
        await store.put("orders", "o-1", {"status": "pending"}, expected_rev=0)
        assert (await store.get("orders", "o-1")) is not None
        with pytest.raises(ReadStoreUnavailable):
            await store.find("orders")
    finally:
        await store.close()


async def test_every_operation_is_bounded_in_time(mongodb_url: str, listen: Listen) -> None:
    # No socket timeout by default: a server that stops answering would hold a projection
    # worker's call forever. Client-side operation timeouts put a server-side limit
    # (maxTimeMS) on every command too.
    commands = listen()
    store = await MongoReadModelStore(mongodb_url).open()
    try:
        await exercise(store)
    finally:
        await store.close()
    bounded = commands.named(*WRITES, "find", "aggregate", "listCollections")
    assert bounded
    limits = [c.get("maxTimeMS") for c in bounded]
    assert limits
    assert all(limit is not None and 0 < limit <= 20_000 for limit in limits), limits

    commands = listen()
    store = await MongoReadModelStore(with_options(mongodb_url, "timeoutMS=120000")).open()
    try:
        await store.get("orders", "o-1")
    finally:
        await store.close()
    (read,) = commands.named("find")
    assert 20_000 < read["maxTimeMS"] <= 120_000


@pytest.mark.rabbitmq
async def test_a_projection_worker_rides_out_the_server_going_away_and_coming_back(
    settings: Settings, start_worker: StartWorker, amqp_url: str, tmp_path: Path
) -> None:
    # A server of this test's own, keeping its data on disk across a crash (so syncing
    # every commit, as mongod's journal does for a majority write).
    log, data = tmp_path / "secantusd.log", tmp_path / "data"
    server = SecantusServer(log, storage=data, options=SYNC_ON_COMMIT).start()
    try:
        settings = settings.model_copy(
            update={
                "read_store": with_database(server.url, "conveyor"),
                # A call that fails during the outage is dead-lettered at once.
                "max_attempts": 1,
                "retry_delays": (0.2,),
            }
        )
        await store_orders(settings.event_store, 100)
        events = await integration_events(settings)
        await start_worker(settings, ("projections",))
        half = len(events) // 2
        await publish_events(amqp_url, events[:half])
        summary_queue = f"{settings.projection_queue_prefix}.order_summary"

        async def some_progress() -> bool:
            return await queue_depth(amqp_url, summary_queue) < half * 0.8

        await eventually(some_progress, within=60)
        server.kill()
        await publish_events(amqp_url, events[half:])
        # Longer than PyMongo's wait for a server used to be (5 s), about as long as a
        # replica set's election: the workers' calls wait for a server meanwhile.
        await asyncio.sleep(8)
        server = SecantusServer(log, port=server.port, storage=data, options=SYNC_ON_COMMIT)
        server.start()
        await read_models_settle(settings, within=60)
        for name in ("order_summary", "active_orders", "customer_history"):
            dlq = f"{settings.projection_queue_prefix}.{name}.dlq"
            assert await queue_depth(amqp_url, dlq) == 0, dlq
    finally:
        server.stop()


async def _write_then_crash(tmp_path: Path, options: tuple[str, ...], writes: int) -> int:
    """Acknowledged writes that are still there after the server is SIGKILLed."""
    log, data = tmp_path / "secantusd.log", tmp_path / "data"
    shutil.rmtree(data, ignore_errors=True)
    server = SecantusServer(log, storage=data, options=options).start()
    try:
        url = with_database(server.url, "crash")
        store = await MongoReadModelStore(url).open()
        try:
            for n in range(writes):
                await store.put("orders", f"o-{n}", {"n": n}, expected_rev=0)  # w:majority
        finally:
            await store.close()
        server.kill()
        server = SecantusServer(log, port=server.port, storage=data).start()
        store = await MongoReadModelStore(url).open()
        try:
            return await store.count("orders")
        finally:
            await store.close()
    finally:
        server.stop()


async def test_secantusdb_keeps_acknowledged_writes_through_a_crash_with_sync_on_commit(
    tmp_path: Path,
) -> None:
    assert await _write_then_crash(tmp_path, SYNC_ON_COMMIT, 300) == 300


async def test_secantusdb_by_default_loses_acknowledged_writes_in_a_crash(
    tmp_path: Path,
) -> None:
    """A difference from mongod (README, Tests): a w:majority write is acknowledged
    before it is synced to disk, so a SIGKILL loses the last ones. mongod journals such a
    write first (writeConcernMajorityJournalDefault)."""
    kept = []
    for _ in range(6):  # a race with the disk: 3 crashes in 4 showed it here
        kept.append(await _write_then_crash(tmp_path, (), 300))
        if kept[-1] < 300:
            break
    assert min(kept) < 300, kept


async def test_closing_with_the_server_gone_takes_no_server_selection_timeout(
    tmp_path: Path,
) -> None:
    """PyMongo's close() first sends endSessions and waits for a server to send it to, up
    to serverSelectionTimeoutMS (30 s): a worker stopping while its store is away used to
    spend its whole stop deadline there."""
    log, data = tmp_path / "secantusd.log", tmp_path / "data"
    server = SecantusServer(log, storage=data).start()
    try:
        url = with_options(with_database(server.url, "closing"), "timeoutMS=300")
        store = await MongoReadModelStore(url).open()
        await store.put("orders", "o-1", {"n": 1}, expected_rev=0)
        await asyncio.gather(*(store.count("orders") for _ in range(5)))  # sessions to end
    finally:
        server.stop()
    with pytest.raises(ReadStoreUnavailable):  # the client now knows the server is gone
        await store.count("orders")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(store.close(), timeout=20)
    assert loop.time() - started < mongodb.CLOSE_TIMEOUT_SECONDS + 2
