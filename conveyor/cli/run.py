"""`conveyor run` (the workers, until SIGINT/SIGTERM) and `conveyor demo`."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from rich.console import Console

from conveyor.bootstrap import describe_event_store, describe_read_store
from conveyor.cli.app import console, run_async
from conveyor.eventstore.serialization import redact_url
from conveyor.settings import Settings


def configure_logging(verbose: bool, settings: Settings | None = None) -> None:
    """A worker's log stream (CONVEYOR_LOG_FORMAT, CONVEYOR_LOG_LEVEL; -v means DEBUG):
    timestamps, message ids, and the libraries' reconnection warnings."""
    from conveyor.observability.logs import configure_logging as configure_root

    level = "DEBUG" if verbose else settings.log_level if settings else "INFO"
    configure_root(settings.log_format if settings else "text", level)
    # aio_pika reports each reconnection attempt; aiormq's lines for the same events repeat it.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("conveyor.broker").setLevel(
        logging.DEBUG if level == "DEBUG" else logging.WARNING
    )


def run(
    only: Annotated[
        str,
        typer.Option(
            help="Comma-separated components to host: commands, gateway, projections, "
            "process-manager, http."
        ),
    ] = "commands,gateway,projections,process-manager,http",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start the workers and run until SIGINT/SIGTERM."""
    from workers.host import WorkerHost

    components = [part.strip() for part in only.split(",") if part.strip()]

    async def main(settings: Settings) -> None:
        configure_logging(verbose, settings)
        host = WorkerHost(settings, components)
        logging.getLogger("conveyor.worker").info(
            "RabbitMQ %s, event store %s, read store %s",
            redact_url(settings.amqp_url),
            describe_event_store(settings),
            describe_read_store(settings),
        )
        await host.run_until_signalled()

    run_async(main)


def demo(
    orders: Annotated[int, typer.Option(min=1, max=1_000_000, help="How many orders.")] = 200,
    in_flight: Annotated[int, typer.Option(min=1, help="Orders in progress at once.")] = 20,
) -> None:
    """Drive N orders through the system and report what happened (starts the workers
    in this process if none are running)."""
    from conveyor.demo import make_progress, print_report, run_demo

    progress = make_progress(Console(stderr=True))

    async def main(settings: Settings) -> Any:
        logging.basicConfig(level=logging.WARNING, force=True)
        with progress:
            task = progress.add_task("orders done", total=orders)
            visible = progress.add_task("in read models", total=orders)

            def report(done: int, seen: int) -> None:
                progress.update(task, completed=done)
                progress.update(visible, completed=seen)

            return await run_demo(settings, orders, in_flight=in_flight, on_progress=report)

    result = run_async(main)
    print_report(result, console)
    if result.timed_out:
        raise typer.Exit(1)
