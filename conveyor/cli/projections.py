"""`conveyor projections rebuild`: read models rebuilt from the event store."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console

from conveyor.cli.app import console, fail, run_async
from conveyor.cli.stores import event_store, read_store
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.settings import Settings

projections_app = typer.Typer(help="Read-model projections: rebuilds.", no_args_is_help=True)


@projections_app.command("rebuild")
def projections_rebuild(
    names: Annotated[
        list[str],
        typer.Argument(
            help="order_summary, customer_history, active_orders (several: one pass over the "
            "log feeds them all), or all.",
        ),
    ],
) -> None:
    """Rebuild read models from the event store into new versions, then switch readers."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from conveyor.readmodels.projections import PROJECTIONS_BY_NAME
    from conveyor.readmodels.rebuild import RebuildError, rebuild_many

    if "all" in names:
        names = list(PROJECTIONS_BY_NAME)
    for name in names:
        if name not in PROJECTIONS_BY_NAME:
            choices = ", ".join(sorted(PROJECTIONS_BY_NAME))
            fail(f"unknown projection {name!r}; choose from {choices} (or all)", 2)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>10} events/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )

    async def main(settings: Settings) -> Any:
        async with (
            event_store(settings, read_only=False) as events,
            read_store(settings, read_only=False) as documents,
        ):
            task = progress.add_task(f"rebuilding {', '.join(names)}", total=None, rate="-")
            started = time.monotonic()

            def report(done: int, total: int) -> None:
                elapsed = time.monotonic() - started
                rate = f"{done / elapsed:,.0f}" if elapsed > 0 else "-"
                progress.update(task, completed=done, total=total, rate=rate)

            try:
                with progress:
                    return await rebuild_many(
                        names,
                        events,
                        documents,
                        ProjectionCollections(documents),
                        progress=report,
                    )
            except RebuildError as exc:
                fail(str(exc))

    for result in run_async(main):
        if result.resumed:
            console.print(
                f"resumed {result.name}: the interrupted catch-up of {result.collection} "
                f"applied {result.caught_up_events} event(s); readers use {result.collection}"
            )
            continue
        console.print(
            f"rebuilt {result.name}: {result.events:,} events into {result.documents:,} "
            f"documents in {result.seconds:.1f}s ({result.events_per_second:,.0f} events/s); "
            f"readers now use {result.collection} (was {result.previous_collection}); "
            f"{result.caught_up_events} event(s) caught up after the switch"
        )
