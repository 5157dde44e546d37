"""The chaos checker's view of the process manager's commands: read from the workflow
streams of a real SQLite event store, expected (not unexpected), and a derived command
applied twice or never is found."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from chaos.checker import stored_commands
from conveyor.aggregates import AGGREGATES
from conveyor.application.commands import CommandEnvelope, CommandHandler
from conveyor.eventstore.port import NewEvent
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.workflows.fulfilment import FulfilmentWorkflows
from domain.fulfilment.inputs import FulfilmentLine, OrderConfirmed
from domain.inventory.commands import ReceiveStock

NOW = datetime(2026, 12, 1, tzinfo=UTC)


async def _workflow_and_effects(path: Path, *, apply: int, twice: bool) -> Any:
    store = await SqliteEventStore(path).open()
    try:
        handler = CommandHandler(store, AGGREGATES, clock=lambda: NOW)
        stock_id = str(uuid.uuid4())
        await handler.handle(CommandEnvelope(ReceiveStock("BOOK", 10), stock_id, "c", "c"))
        workflows = FulfilmentWorkflows(
            store, AGGREGATES.named("order"), timeout=timedelta(seconds=5)
        )
        lines = (FulfilmentLine("BOOK", 1), FulfilmentLine("MUG", 2))
        reaction = await workflows.handle(
            OrderConfirmed(str(uuid.uuid4()), NOW, "o-1", lines, Decimal("9.00"))
        )
        sent = reaction.commands
        for outgoing in sent[:apply]:
            envelope = CommandEnvelope(outgoing.command, outgoing.command_id, "o-1", "o-1")
            assert (await handler.handle(envelope)).status == "accepted"
        if twice:  # what a defect would leave: the same command's effect stored again
            stream = AGGREGATES.named("inventory").stream("BOOK")
            version = len(await store.read_stream(stream))
            await store.append(
                stream,
                version,
                [
                    NewEvent(
                        event_id=uuid.uuid4(),
                        type="StockReserved",
                        data={"order_id": "o-1", "quantity": 1},
                        occurred_at=NOW,
                        schema_version=1,
                        metadata={"command_id": sent[0].command_id},
                    )
                ],
            )
        return sent, stock_id
    finally:
        await store.close()


async def test_the_process_managers_commands_are_expected_and_all_applied(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    sent, stock_id = await _workflow_and_effects(path, apply=2, twice=False)
    stored = await stored_commands(SimpleNamespace(event_store=path))  # type: ignore[arg-type]

    assert stored.derived == {c.command_id: "ReserveStock" for c in sent}
    assert stored.workflow_events >= 1
    assert not stored.other  # the workflow's own events are not strays
    applied, lost, twice = stored.derived_effects()
    assert applied == {c.command_id for c in sent}
    assert (lost, twice) == ([], [])
    assert set(stored.events) == {stock_id, *applied}


async def test_a_derived_command_never_applied_or_applied_twice_is_found(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    sent, _ = await _workflow_and_effects(path, apply=1, twice=True)
    stored = await stored_commands(SimpleNamespace(event_store=path))  # type: ignore[arg-type]

    _, lost, twice = stored.derived_effects()
    assert lost == [sent[1].command_id]
    assert twice == [sent[0].command_id]
