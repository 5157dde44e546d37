"""The `conveyor` command line: run workers, send commands, read an order's history."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from aiormq.exceptions import AMQPConnectionError, ChannelPreconditionFailed, PublishError
from faststream.rabbit import Channel, RabbitBroker
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from application.history import OrderHistory, order_history
from conveyor.bootstrap import describe_event_store, open_event_store
from conveyor.settings import Settings
from eventstore.port import EventStoreUnavailable
from eventstore.serialization import redact_url, to_utc

app = typer.Typer(
    name="conveyor",
    help="Event-sourced order workers on RabbitMQ.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
T = TypeVar("T")


class CliError(Exception):
    """A failure to report as one line and a non-zero exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int = 1) -> NoReturn:
    raise CliError(message, exit_code)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"CONVEYOR_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        fail(f"invalid configuration: {problems}", 2)


def quiet_logging() -> None:
    """One-shot commands report failures themselves, as one line: library log lines
    (aiormq logs every failed connection attempt) would only repeat them."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("aiormq", "aio_pika", "conveyor.broker"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


def run_async(make: Callable[[Settings], Awaitable[T]]) -> T:
    """Run a command's coroutine, turning the failures a user can meet into one clear line."""
    quiet_logging()
    settings = load_settings()
    try:
        return asyncio.run(make(settings))  # type: ignore[arg-type]
    except CliError:
        raise
    except EventStoreUnavailable as exc:
        fail(f"event store unavailable ({describe_event_store(settings)}): {exc}")
    except (AMQPConnectionError, ConnectionError) as exc:
        fail(
            f"cannot connect to RabbitMQ at {redact_url(settings.amqp_url)}: "
            f"{exc or type(exc).__name__}"
        )
    except ChannelPreconditionFailed as exc:
        fail(f"RabbitMQ refused the topology (a queue exists with other arguments?): {exc}")
    except ValueError as exc:
        fail(str(exc), 2)


def configure_logging(verbose: bool) -> None:
    """A worker's log stream: timestamps, and the libraries' reconnection warnings."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # aio_pika reports each reconnection attempt; aiormq's lines for the same events repeat it.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("conveyor.broker").setLevel(logging.DEBUG if verbose else logging.WARNING)


@app.command()
def run(
    only: Annotated[
        str, typer.Option(help="Comma-separated components to host in this process.")
    ] = "commands",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start the workers and run until SIGINT/SIGTERM."""
    from workers.host import WorkerHost

    components = [part.strip() for part in only.split(",") if part.strip()]

    async def main(settings: Settings) -> None:
        configure_logging(verbose)
        host = WorkerHost(settings, components)
        logging.getLogger("conveyor.worker").info(
            "RabbitMQ %s, event store %s",
            redact_url(settings.amqp_url),
            describe_event_store(settings),
        )
        await host.run_until_signalled()

    run_async(main)


@app.command()
def send(
    command: Annotated[str, typer.Argument(help="The command as a JSON object.")],
    wait: Annotated[bool, typer.Option(help="Wait for the outcome and print it.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 10.0,
) -> None:
    """Publish a command to the command queue (a command_id is added if missing)."""
    try:
        payload = json.loads(command, parse_float=Decimal)
    except ValueError as exc:
        fail(f"the command is not valid JSON: {exc}", 2)
    if not isinstance(payload, dict):
        fail("the command must be a JSON object", 2)
    payload.setdefault("command_id", str(uuid.uuid4()))
    body = json.dumps(payload, default=str).encode()

    async def main(settings: Settings) -> dict[str, Any] | None:
        broker = RabbitBroker(
            settings.amqp_url,
            default_channel=Channel(publisher_confirms=True, on_return_raises=True),
            logger=None,
        )
        async with broker:
            await broker.connect()
            options: dict[str, Any] = {
                "queue": settings.command_queue,
                "content_type": "application/json",
                "message_id": payload["command_id"],
                "correlation_id": payload.get("correlation_id") or payload["command_id"],
                "persist": True,
            }
            try:
                if not wait:
                    await broker.publish(body, **options)
                    return None
                reply = await broker.request(body, timeout=timeout, **options)
            except PublishError:
                fail(
                    f"queue {settings.command_queue!r} does not exist: start the workers "
                    "(conveyor run) once to declare it"
                )
            except TimeoutError:
                fail(
                    f"no outcome within {timeout:g}s for command {payload['command_id']}: it is "
                    "queued and will be processed when a worker runs",
                    3,
                )
            outcome: dict[str, Any] = json.loads(reply.body)
            return outcome

    outcome = run_async(main)
    if outcome is None:
        console.print(f"sent {payload.get('type')} command_id={payload['command_id']}")
        return
    print(json.dumps(outcome))
    if outcome.get("status") == "rejected":
        raise typer.Exit(4)


def _parse_time(value: str) -> datetime:
    try:
        return to_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        fail(f"--as-of must be an ISO 8601 time such as 2026-11-26T10:00:00Z, got {value!r}", 2)


@app.command()
def history(
    order_id: Annotated[str, typer.Argument(help="The order id.")],
    as_of_version: Annotated[
        int | None, typer.Option(min=0, help="State as of this version.")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option(help="State as of this ISO 8601 time (UTC if no zone).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """An order's events and its state at a point (temporal query on the event store)."""
    if as_of_version is not None and as_of is not None:
        fail("give --as-of-version or --as-of, not both", 2)
    moment = _parse_time(as_of) if as_of else None

    async def main(settings: Settings) -> OrderHistory:
        store = await open_event_store(settings)
        try:
            return await order_history(store, order_id, as_of_version=as_of_version, as_of=moment)
        finally:
            await store.close()

    result = run_async(main)
    if as_json:
        print(json.dumps(history_as_json(result), indent=2))
    else:
        print_history(result)
    if not result.events:
        raise typer.Exit(1)


def history_as_json(result: OrderHistory) -> dict[str, Any]:
    state = result.state
    return {
        "order_id": result.order_id,
        "state": {
            "exists": state.exists,
            "version": state.version,
            "status": state.status.value if state.status else None,
            "customer_id": state.customer_id,
            "items": [
                {"sku": line.sku, "quantity": line.quantity, "unit_price": str(line.unit_price)}
                for line in state.lines.values()
            ],
            "total": str(state.total),
        },
        "events": [
            {
                "event_id": str(event.event_id),
                "version": event.version,
                "type": event.type,
                "schema_version": event.schema_version,
                "occurred_at": event.occurred_at.isoformat(),
                "data": dict(event.data),
                "metadata": dict(event.metadata),
            }
            for event in result.events
        ],
    }


def print_history(result: OrderHistory) -> None:
    if not result.events:
        console.print(f"order {result.order_id!r} has no events at that point")
        return
    table = Table(title=f"order {result.order_id}")
    for column in ("version", "occurred at (UTC)", "event", "data", "command_id"):
        table.add_column(column)
    for event in result.events:
        table.add_row(
            str(event.version),
            event.occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f"),
            event.type,
            json.dumps(dict(event.data)),
            event.metadata.get("command_id", ""),
        )
    console.print(table)
    state = result.state
    console.print(
        f"state at version {state.version}: {state.status}, customer {state.customer_id}, "
        f"{len(state.lines)} item line(s), total {state.total}"
    )
    for line in state.lines.values():
        console.print(f"  {line.sku} x {line.quantity} @ {line.unit_price}")


def main() -> None:
    try:
        app()
    except CliError as error:
        print(f"conveyor: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
