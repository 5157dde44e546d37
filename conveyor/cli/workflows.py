"""`conveyor workflows …`: the order-fulfilment workflows, from their read model (`stuck`,
`list`) and from the event store (`show`: the workflow's own stream, folded)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from conveyor.bootstrap import process_manager_queue
from conveyor.cli.app import console, fail, print_json, run_async
from conveyor.cli.stores import event_store, read_store
from conveyor.operations.management import ManagementApi, ManagementApiError
from conveyor.settings import Settings
from conveyor.workflows.states import WorkflowStates, WorkflowSummary
from domain.fulfilment.events import CODEC
from domain.fulfilment.workflow import rebuild, stream_name

workflows_app = typer.Typer(help="Order-fulfilment workflows (the process manager).")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _table(title: str, summaries: list[WorkflowSummary]) -> Table:
    table = Table(title=title)
    for column in ("order", "status", "waiting for", "deadline", "cancel reason"):
        table.add_column(column)
    for s in summaries:
        table.add_row(
            s.order_id, s.status, s.waiting_for or "", s.deadline or "", s.cancel_reason or ""
        )
    return table


@workflows_app.command("stuck")
def stuck(
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """Workflows waiting past their deadline plus CONVEYOR_FULFILMENT_STUCK_MARGIN (their
    timeout never came back), and how many workflow inputs are dead-lettered (exit code 1
    when there are any of either)."""

    async def main(settings: Settings) -> tuple[list[WorkflowSummary], int | None, str]:
        async with read_store(settings, read_only=True) as store:
            found = await WorkflowStates(store).stuck(
                datetime.now(UTC),
                timedelta(seconds=settings.fulfilment_stuck_margin),
                limit=limit,
            )
        dlq = process_manager_queue(settings).dead_letter_queue
        try:
            async with ManagementApi.from_settings(settings) as api:
                stats = await api.queue(dlq)
        except ManagementApiError as exc:
            print(f"conveyor: could not read {dlq}: {exc}", file=sys.stderr)
            return found, None, dlq
        return found, int((stats or {}).get("messages", 0) or 0), dlq

    found, dead_lettered, dlq = run_async(main)
    if as_json:
        print_json(
            {
                "workflows": [s.as_json() for s in found],
                "count": len(found),
                "dead_lettered_inputs": dead_lettered,
                "dead_letter_queue": dlq,
            }
        )
    else:
        console.print(_table("stuck workflows", found) if found else "no stuck workflows")
        if dead_lettered:
            console.print(
                f"{dead_lettered} workflow input(s) dead-lettered in {dlq}: conveyor dlq show {dlq}"
            )
    if found or dead_lettered:
        raise typer.Exit(1)


@workflows_app.command("show")
def show(
    order_id: Annotated[str, typer.Argument(help="The order whose workflow to show.")],
    as_json: JsonOption = False,
) -> None:
    """One workflow, folded from its own stream in the event store (`fulfilment-<order>`)."""

    async def main(settings: Settings) -> dict[str, Any]:
        async with event_store(settings, read_only=True) as store:
            stored = await store.read_stream(stream_name(order_id))
        events = [CODEC.from_data(e.type, e.schema_version, e.data) for e in stored]
        state = rebuild(order_id, events)
        return {
            "order_id": order_id,
            "version": state.version,
            "status": state.status.value,
            "waiting_for": state.waiting_for,
            "deadline": state.deadline,
            "cancel_reason": state.cancel_reason,
            "reserved": dict(state.reserved),
            "events": [
                {"version": e.version, "type": e.type, "occurred_at": e.occurred_at.isoformat()}
                for e in stored
            ],
        }

    result = run_async(main)
    if not result["events"]:
        fail(f"no workflow for order {order_id!r}", 1)
    if as_json:
        print_json(result)
        return
    console.print(
        f"workflow {order_id}: {result['status']} (version {result['version']})"
        + (f", waiting for {result['waiting_for']}" if result["waiting_for"] else "")
        + (f", cancelled: {result['cancel_reason']}" if result["cancel_reason"] else "")
    )
    for event in result["events"]:
        console.print(f"  {event['version']:>3}  {event['occurred_at']}  {event['type']}")
