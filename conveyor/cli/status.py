"""`conveyor status`: queues, lag and a health verdict, once or --watch."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer

from conveyor.cli.app import CliError, console, fail, run_async
from conveyor.cli.stores import event_store, read_store
from conveyor.settings import Settings


def status(
    seconds: Annotated[
        float,
        typer.Argument(min=0.1, metavar="[SECONDS]", help="With --watch: seconds between checks."),
    ] = 2.0,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh every SECONDS (default 2) until Ctrl-C.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON document (with --watch: one line per check)."),
    ] = False,
) -> None:
    """Queues (depth, consumers, rates), gateway and projection lag, and a health verdict.

    Exit codes: 0 healthy; 1 unhealthy (the reasons are printed: a work queue without
    consumers, lag above CONVEYOR_STATUS_MAX_LAG_EVENTS / _SECONDS, dead letters);
    2 the status could not be collected (management API, event or read store unreachable).
    """
    from contextlib import AsyncExitStack

    from rich.live import Live
    from rich.text import Text

    from conveyor.operations.management import ManagementApi, ManagementApiError
    from conveyor.operations.status import (
        EXIT_UNAVAILABLE,
        StatusReport,
        collect_status,
        render,
        verdict,
    )

    last_code = [EXIT_UNAVAILABLE]

    def show(report: StatusReport, live: Live | None) -> None:
        last_code[0] = report.exit_code
        if as_json:
            print(json.dumps(report.as_json(), indent=None if watch else 2), flush=True)
        elif live is not None:
            live.update(render(report), refresh=True)
        else:
            console.print(render(report, with_verdict=False))
            console.print(verdict(report), soft_wrap=True)

    async def main(settings: Settings) -> None:
        async with AsyncExitStack() as stack:
            # The report names both stores (absolute paths for SQLite files).
            events = await stack.enter_async_context(
                event_store(settings, read_only=True, announce=False)
            )
            documents = await stack.enter_async_context(
                read_store(settings, read_only=True, announce=False)
            )
            api = await stack.enter_async_context(ManagementApi.from_settings(settings))
            if not watch:
                try:
                    show(await collect_status(settings, events, documents, api), None)
                except ManagementApiError as error:
                    fail(str(error), EXIT_UNAVAILABLE)
                return
            live = None
            if not as_json:
                live = stack.enter_context(Live(console=console, auto_refresh=False))
            while True:
                try:
                    show(await collect_status(settings, events, documents, api), live)
                except ManagementApiError as error:
                    last_code[0] = EXIT_UNAVAILABLE
                    if live is None:
                        print(f"conveyor: error: {error}", file=sys.stderr, flush=True)
                    else:
                        live.update(Text(f"conveyor: error: {error}", style="red"), refresh=True)
                await asyncio.sleep(seconds)

    try:
        run_async(main)
    except CliError as error:  # whatever stopped the collection: "could not collect"
        raise CliError(str(error), EXIT_UNAVAILABLE) from None
    except KeyboardInterrupt:
        if not watch:
            raise
    raise typer.Exit(last_code[0])
