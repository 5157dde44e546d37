"""The gateway's lag gauge means the same on every event store (issue 14).

Positions are not event counts (KurrentDB's are byte offsets), so the lag is the age of the
oldest event not yet published, in seconds. The store here runs on kurrentdbclient's own
scripted servicers (tests/unit/kurrentdbclient_servicers.py, not a KurrentDB) only because
they hand out KurrentDB-like positions; the broker is one that was never connected, so every
publish fails, as when RabbitMQ is down.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from faststream.rabbit import RabbitBroker

from conveyor.eventstore.kurrentdb import KurrentDBEventStore
from conveyor.gateway.relay import GATEWAY_CHECKPOINT, EventGateway
from conveyor.observability.metrics import GATEWAY_LAG
from conveyor.readmodels.checkpoints import LeasedCheckpoint
from conveyor.readmodels.sqlite import SqliteReadModelStore
from tests.rabbit import eventually
from tests.unit.kurrentdbclient_servicers import ScriptedNode


def gauge() -> float:
    return GATEWAY_LAG.collect()[0].samples[0].value


async def test_lag_while_the_broker_is_down_is_the_age_of_the_oldest_unpublished_event(
    tmp_path: Path,
) -> None:
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    async with ScriptedNode() as node:
        for n in range(20):
            node.streams.add(
                f"order-o-{n}",
                "OrderCreated",
                json.dumps({"customer_id": "alice"}).encode(),
                json.dumps({"occurred_at": an_hour_ago.isoformat()}).encode(),
            )
        store = KurrentDBEventStore(node.uri, timeout=10)
        await store.open()
        read_store = await SqliteReadModelStore(tmp_path / "readmodels.db").open()
        checkpoint = LeasedCheckpoint(read_store, GATEWAY_CHECKPOINT, "gateway-test", ttl=5)
        gateway = EventGateway(store, RabbitBroker("amqp://127.0.0.1:1/"), checkpoint)
        GATEWAY_LAG.set(-1)
        stop = asyncio.Event()
        running = asyncio.ensure_future(gateway.run(stop))
        try:
            await eventually(lambda: gauge() != -1, within=10, what="a lag measurement")
            assert gateway.last_error is not None  # publishing failed: the relay waits
            assert 3590 <= gauge() <= 3660
        finally:
            stop.set()
            await running
            await read_store.close()
            await store.close()
