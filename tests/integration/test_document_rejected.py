"""A document the read store refuses for what it is goes to the DLQ at once, with its
reason: no retry of the same write can succeed, and it is no outage either (nothing
pauses). MongoDB refuses documents over 16 MB; the MongoDB wire-protocol test server
(SecantusDB, `CONVEYOR_TEST_MONGODB_URL`) enforces the same limit."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client import REGISTRY

from conveyor.readmodels.port import DocumentRejected
from conveyor.settings import Settings
from messaging import failures
from tests.integration.test_projections import publish_events
from tests.rabbit import Management, eventually
from tests.unit.test_projections import OrderEvents
from workers.host import WorkerHost

pytestmark = pytest.mark.rabbitmq

MONGODB_URL = os.environ.get("CONVEYOR_TEST_MONGODB_URL")
StartWorker = Callable[..., Awaitable[WorkerHost]]
OVER_16_MB = "c" * (17 * 1024 * 1024)


def mongodb_database() -> str:
    if not MONGODB_URL:
        pytest.skip("CONVEYOR_TEST_MONGODB_URL is not set: no MongoDB server to test against")
    base = MONGODB_URL.split("?")[0].rstrip("/").rsplit("/", 1)[0]
    return f"{base}/conveyor_{uuid.uuid4().hex[:12]}"


async def test_the_mongodb_store_reports_an_oversized_document_as_rejected() -> None:
    from conveyor.readmodels.mongodb import MongoReadModelStore

    store = await MongoReadModelStore(mongodb_database()).open()
    try:
        await store.ensure_collection("documents")
        with pytest.raises(DocumentRejected, match="too large"):
            await store.put("documents", "big", {"text": OVER_16_MB}, expected_rev=0)
    finally:
        await store.close()


async def test_an_event_whose_document_the_store_refuses_is_dead_lettered_at_once(
    settings: Settings,
    start_worker: StartWorker,
    amqp_url: str,
    management: Management,
    test_vhost: str,
) -> None:
    settings = settings.model_copy(update={"read_store": mongodb_database()})
    await start_worker(settings, ("projections",))
    refused = OrderEvents("o-huge", OVER_16_MB).created()  # every document holds the customer
    fine = OrderEvents("o-fine", "c-1").created()
    await publish_events(amqp_url, [refused, fine])

    dlq = f"{settings.projection_queue_prefix}.order_summary.dlq"
    dead = await eventually(lambda: management.peek(test_vhost, dlq), within=60, what=dlq)
    headers = dead[0]["properties"]["headers"]
    assert dead[0]["properties"]["message_id"] == str(refused.event_id)
    assert headers[failures.ATTEMPTS] == 1  # no retry ladder
    assert headers[failures.FAILURE_CLASS] == "permanent"
    assert headers[failures.ERROR_TYPE] == "DocumentRejected"
    assert "too large" in headers[failures.ERROR_MESSAGE]
    assert REGISTRY.get_sample_value("conveyor_consumers_paused", {"store": "read_store"}) == 0
