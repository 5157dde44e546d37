"""`conveyor demo` end to end on a fresh vhost and fresh SQLite files."""

from __future__ import annotations

import pytest
from rich.console import Console

from conveyor.demo import print_report, run_demo
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.settings import Settings

pytestmark = pytest.mark.rabbitmq


async def test_the_demo_drives_orders_into_every_read_model(settings: Settings) -> None:
    report = await run_demo(settings, 30, in_flight=10, give_up_after=120, workflow_timeout=2.0)
    assert report.started_workers
    assert report.timed_out == 0
    assert report.outcomes["accepted"] >= 30
    assert report.read_models["order_summary"] == 30
    assert report.read_models["active_orders"] == 30
    assert report.read_models["customer_history"] == 30  # one document per order
    assert len(report.latencies_ms) == 30
    assert report.events_published == report.outcomes["accepted"]
    # every rejection is recorded too (CommandRejected), but never published
    assert report.events_stored == report.outcomes["accepted"] + report.outcomes["rejected"]
    assert report.workflows is not None
    store = await SqliteEventStore(settings.event_store).open()
    try:
        # the orders' events, then the workflows' (stock, payments, fulfilments, their own)
        head = await store.head_position()
        assert head == report.events_stored + report.workflows.events_stored
    finally:
        await store.close()

    console = Console(record=True, width=120)
    print_report(report, console)
    text = console.export_text()
    assert "30 orders" in text
    assert "commands/s" in text
    assert "p99" in text

    # Then the workflows the confirmations started, once stock is seeded, all ended.
    workflows = report.workflows
    assert workflows is not None
    assert workflows.confirmed >= 15
    assert workflows.unfinished == 0
    assert sum(workflows.outcomes.values()) == workflows.confirmed
    assert workflows.outcomes["fulfilled"] == workflows.payments["authorize"]
    assert workflows.outcomes["cancelled: payment declined"] == workflows.payments["decline"]
    assert workflows.outcomes["cancelled: timed out"] == workflows.payments["none"]
    assert workflows.outcomes["cancelled: stock unavailable"] >= 1  # DESK is seeded short
    for sku, (on_hand, reserved, available) in workflows.stock_after.items():
        assert reserved == 0, sku  # every reservation committed or released
        assert available == on_hand >= 0
    assert "fulfilment workflows" in text
    assert "workflows/s" in text
