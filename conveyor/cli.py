"""The `conveyor` command line: run workers, send commands, read an order's history."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from aiormq.exceptions import (
    AMQPConnectionError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    PublishError,
)
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.table import Table

from conveyor.aggregates import AGGREGATES
from conveyor.application.aggregates import AggregateDefinition, aggregate_version
from conveyor.application.history import AggregateHistory, aggregate_history
from conveyor.bootstrap import (
    command_queue,
    describe_event_store,
    describe_read_store,
    open_event_store,
    open_read_store,
    rabbit_broker,
)
from conveyor.embedded.sqlite import SqliteFileMissing, SqliteFileUnusable
from conveyor.eventstore.port import EventStore, EventStoreUnavailable
from conveyor.eventstore.serialization import redact_url, to_utc
from conveyor.observability.logs import escape_controls
from conveyor.queries.service import OrderQueries, history_as_json
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.port import ReadModelStore, ReadStoreUnavailable
from conveyor.settings import Settings
from messaging.command_consumer import COMMANDS_EXCHANGE

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
    except SettingsError as exc:  # a CONVEYOR_*_FILE problem; never quotes the content
        fail(f"invalid configuration: {exc}", 2)
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
    except SqliteFileUnusable as exc:  # permanent: says which file and why
        fail(str(exc), 2)
    except EventStoreUnavailable as exc:
        fail(f"event store unavailable ({describe_event_store(settings)}): {exc}")
    except ReadStoreUnavailable as exc:
        fail(f"read-model store unavailable ({describe_read_store(settings)}): {exc}")
    except (AMQPConnectionError, ConnectionError) as exc:
        fail(
            f"cannot connect to RabbitMQ at {redact_url(settings.amqp_url)}: "
            f"{exc or type(exc).__name__}"
        )
    except OSError as exc:
        fail(str(exc))
    except ChannelPreconditionFailed as exc:
        fail(f"RabbitMQ refused the topology (a queue exists with other arguments?): {exc}")
    except ValueError as exc:
        fail(str(exc), 2)
    except Exception as exc:  # anything else: still one line, the traceback only with -v
        logging.getLogger("conveyor").debug("unexpected failure", exc_info=True)
        fail(f"{type(exc).__name__}: {exc}")


async def _open_event_store(settings: Settings, *, read_only: bool) -> EventStore:
    store = await open_event_store(settings, read_only=read_only)
    _using(f"event store {describe_event_store(settings)}")
    return store


async def _open_read_store(settings: Settings, *, read_only: bool) -> ReadModelStore:
    store = await open_read_store(settings, read_only=read_only)
    _using(f"read store {describe_read_store(settings)}")
    return store


def _using(store: str) -> None:
    """A command's first line names the store it opened (a SQLite file by its absolute
    path): one started in another directory cannot use another file unnoticed. On stderr,
    so that --json output stays one document."""
    print(f"conveyor: {store}", file=sys.stderr, flush=True)


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


@app.command()
def run(
    only: Annotated[
        str,
        typer.Option(
            help="Comma-separated components to host: commands, gateway, projections, http."
        ),
    ] = "commands,gateway,projections,http",
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


@app.command()
def send(
    command: Annotated[str, typer.Argument(help="The command as a JSON object.")],
    wait: Annotated[
        bool,
        typer.Option(help="Wait for the outcome, then for the order summary to reflect it."),
    ] = False,
    read_model: Annotated[
        bool, typer.Option(help="With --wait: also wait for the order summary (read-your-writes).")
    ] = True,
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
    # The queue of the aggregate that owns this command type (unknown types go to the first
    # aggregate's queue, whose worker dead-letters them with the reason, as before).
    owner = AGGREGATES.of_command_type(str(payload.get("type"))) or AGGREGATES.default

    async def main(settings: Settings) -> dict[str, Any] | None:
        queue = command_queue(settings, owner).name
        broker = rabbit_broker(settings, logger=None)
        async with broker:
            await broker.connect()
            options: dict[str, Any] = {
                # Through the command exchange: the only thing a producer may write to.
                "exchange": COMMANDS_EXCHANGE,
                "routing_key": queue,
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
            except (PublishError, ChannelNotFoundEntity):
                fail(
                    f"exchange {COMMANDS_EXCHANGE.name!r} or queue {queue!r} "
                    "does not exist: start the workers (conveyor run) once to declare them"
                )
            except TimeoutError:
                fail(
                    f"no outcome within {timeout:g}s for command {payload['command_id']}: it is "
                    "queued and will be processed when a worker runs",
                    3,
                )
            outcome: dict[str, Any] = json.loads(reply.body)
        if read_model and outcome.get("status") in ("accepted", "duplicate"):
            outcome["read_model_caught_up"] = await _wait_for_order_summary(
                settings, outcome["order_id"], outcome["version"], deadline
            )
        return outcome

    deadline = time.monotonic() + timeout
    outcome = run_async(main)
    if outcome is None:
        console.print(f"sent {payload.get('type')} command_id={payload['command_id']}")
        return
    print(json.dumps(outcome))
    if outcome.get("read_model_caught_up") is False:
        print(
            f"conveyor: the order summary did not reach version {outcome['version']} within "
            f"{timeout:g}s (are the projection workers running?)",
            file=sys.stderr,
        )
    if outcome.get("status") == "rejected":
        raise typer.Exit(4)


async def _wait_for_order_summary(
    settings: Settings, order_id: str, version: int, deadline: float
) -> bool:
    """Read-your-writes: poll the order summary until it shows `version` or time runs out."""
    while True:
        try:
            read_store = await open_read_store(settings, read_only=True)
            break
        except SqliteFileMissing:  # no projection worker has run yet: as not caught up
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)
    try:
        queries = OrderQueries(read_store, ProjectionCollections(read_store, cache_seconds=0))
        while True:
            summary = await queries.order(order_id)
            if summary is not None and summary["version"] >= version:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
    finally:
        await read_store.close()


def _parse_time(value: str) -> datetime:
    try:
        return to_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        fail(f"--as-of must be an ISO 8601 time such as 2026-11-26T10:00:00Z, got {value!r}", 2)


@app.command()
def history(
    aggregate_id: Annotated[str, typer.Argument(help="The aggregate's id (an order id).")],
    as_of_version: Annotated[
        int | None, typer.Option(min=0, help="State as of this version.")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option(help="State as of this ISO 8601 time (UTC if no zone).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    aggregate: Annotated[
        str | None,
        typer.Option(help="Which registered aggregate (default: the first, order)."),
    ] = None,
) -> None:
    """An aggregate's events and its state at a point (temporal query on the event store)."""
    if as_of_version is not None and as_of is not None:
        fail("give --as-of-version or --as-of, not both", 2)
    moment = _parse_time(as_of) if as_of else None
    try:
        definition = AGGREGATES.named(aggregate) if aggregate else AGGREGATES.default
    except LookupError as unknown:
        fail(str(unknown), 2)

    async def main(settings: Settings) -> AggregateHistory:
        store = await _open_event_store(settings, read_only=True)
        try:
            return await aggregate_history(
                store, definition, aggregate_id, as_of_version=as_of_version, as_of=moment
            )
        finally:
            await store.close()

    result = run_async(main)
    if as_json:
        print(json.dumps(history_as_json(result, definition), indent=2))
    else:
        print_history(result, definition)
    if not result.events:
        raise typer.Exit(1)


def print_history(result: AggregateHistory, definition: AggregateDefinition) -> None:
    if not result.events:
        console.print(f"{definition.name} {result.aggregate_id!r} has no events at that point")
        return
    table = Table(title=f"{definition.name} {result.aggregate_id}")
    for column in ("version", "occurred at (UTC)", "event", "data", "command_id"):
        table.add_column(column)
    for event in result.events:
        table.add_row(
            str(aggregate_version(event)),
            event.occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f"),
            event.type,
            json.dumps(dict(event.data)),
            event.metadata.get("command_id", ""),
        )
    console.print(table)
    view = dict(definition.state_view(result.state))
    version = aggregate_version(result.events[-1])
    scalars = [
        f"{name.replace('_id', '')} {value}"
        for name, value in view.items()
        if name not in ("exists", "version", "status") and not isinstance(value, list | dict)
    ]
    summary = "".join(f", {text}" for text in scalars)
    console.print(f"state at version {version}: {view.get('status', '')}{summary}", markup=False)
    for name, value in view.items():
        if isinstance(value, list):
            for item in value:
                console.print(f"  {name}: {json.dumps(item, default=str)}", markup=False)


@app.command()
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
            event_store = await open_event_store(settings, read_only=True)
            stack.push_async_callback(event_store.close)
            read_store = await open_read_store(settings, read_only=True)
            stack.push_async_callback(read_store.close)
            api = await stack.enter_async_context(ManagementApi.from_settings(settings))
            if not watch:
                try:
                    show(await collect_status(settings, event_store, read_store, api), None)
                except ManagementApiError as error:
                    fail(str(error), EXIT_UNAVAILABLE)
                return
            live = None
            if not as_json:
                live = stack.enter_context(Live(console=console, auto_refresh=False))
            while True:
                try:
                    show(await collect_status(settings, event_store, read_store, api), live)
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


def _redacted(message: str) -> str:
    """Last line of defence: a library's exception text may quote a URL with its password."""
    try:
        return Settings().redact(message)
    except Exception:  # the configuration itself is what failed: nothing to redact with
        return message


def main() -> None:
    try:
        app()
    except CliError as error:
        print(f"conveyor: error: {_redacted(str(error))}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


query_app = typer.Typer(help="Read models: orders, customers, active orders.", no_args_is_help=True)
app.add_typer(query_app, name="query")


def _run_query(
    ask: Callable[[OrderQueries], Awaitable[T]],
) -> T:
    async def main(settings: Settings) -> T:
        read_store = await _open_read_store(settings, read_only=True)
        try:
            return await ask(OrderQueries(read_store, ProjectionCollections(read_store)))
        finally:
            await read_store.close()

    return run_async(main)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


@query_app.command("order")
def query_order(
    order_id: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """The order summary of one order."""
    order = _run_query(lambda q: q.order(order_id))
    if order is None:
        fail(f"order {order_id!r} not found in the order summary read model")
    if as_json:
        _print_json(order)
        return
    console.print(
        f"order {order['order_id']} of {order['customer_id']}: {order['status']}, "
        f"total {order['total']}, version {order['version']}, updated {order['updated_at']}"
    )
    table = Table("sku", "quantity", "unit price", "subtotal")
    for item in order["items"]:
        table.add_row(item["sku"], str(item["quantity"]), item["unit_price"], item["subtotal"])
    console.print(table)


@query_app.command("customer")
def query_customer(
    customer_id: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """A customer's order history."""
    customer = _run_query(lambda q: q.customer(customer_id))
    if customer is None:
        fail(f"customer {customer_id!r} not found in the customer history read model")
    if as_json:
        _print_json(customer)
        return
    console.print(
        f"customer {customer_id}: {customer['order_count']} orders "
        f"({customer['pending_count']} pending, {customer['confirmed_count']} confirmed, "
        f"{customer['cancelled_count']} cancelled), lifetime confirmed total "
        f"{customer['lifetime_confirmed_total']}"
    )
    table = Table("order", "status", "total", "created")
    for order in customer["orders"]:
        table.add_row(order["order_id"], order["status"], order["total"], order["created_at"])
    console.print(table)


@query_app.command("active")
def query_active(
    customer: Annotated[str | None, typer.Option(help="Only this customer's orders.")] = None,
    older_than: Annotated[
        float | None, typer.Option(min=0, help="Only orders created more than N seconds ago.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Pending orders, oldest first."""
    orders = _run_query(
        lambda q: q.orders(
            customer_id=customer,
            older_than=timedelta(seconds=older_than) if older_than is not None else None,
            limit=limit,
        )
    )
    if as_json:
        _print_json(orders)
        return
    table = Table("order", "customer", "items", "total", "created")
    for order in orders:
        table.add_row(
            order["order_id"],
            order["customer_id"],
            str(order["item_count"]),
            order["total"],
            order["created_at"],
        )
    console.print(table)
    console.print(f"{len(orders)} pending order(s)")


projections_app = typer.Typer(help="Read-model projections: rebuilds.", no_args_is_help=True)
app.add_typer(projections_app, name="projections")


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
        event_store = await _open_event_store(settings, read_only=False)
        read_store = await _open_read_store(settings, read_only=False)
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
                    event_store,
                    read_store,
                    ProjectionCollections(read_store),
                    progress=report,
                )
        except RebuildError as exc:
            fail(str(exc))
        finally:
            await read_store.close()
            await event_store.close()

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


dlq_app = typer.Typer(
    help="Dead letters: list the dead-letter queues, show, re-drive and purge their messages.",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")


def _run_dlq(work: Callable[[Settings, Any], Awaitable[T]]) -> T:
    """Run a dlq command with a management API client; its failures (unreachable, unknown
    or non-DLQ queue) are one line like every other command's."""
    from conveyor.operations.dead_letters import DeadLetterError
    from conveyor.operations.management import ManagementApi, ManagementApiError

    async def main(settings: Settings) -> T:
        try:
            async with ManagementApi.from_settings(settings) as api:
                return await work(settings, api)
        except (ManagementApiError, DeadLetterError) as exc:
            fail(str(exc))

    return run_async(main)


def _age(age: timedelta | None) -> str:
    if age is None:
        return "-"
    seconds = max(int(age.total_seconds()), 0)
    for unit, size, smaller, smaller_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} {seconds % size // smaller_size}{smaller}"
    return f"{seconds // 60}m {seconds % 60}s" if seconds >= 60 else f"{seconds}s"


@dlq_app.command("list")
def dlq_list(
    sample: Annotated[
        int, typer.Option(min=1, max=10_000, help="Error types are counted over the first N.")
    ] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every dead-letter queue (*.dlq) with its depth, oldest message and error types."""
    from conveyor.operations.dead_letters import list_dead_letter_queues

    summaries, warnings = _run_dlq(lambda s, api: list_dead_letter_queues(s, api, sample))
    for warning in warnings:
        print(f"conveyor: {warning}", file=sys.stderr)
    if as_json:
        _print_json([summary.as_json() for summary in summaries])
        return
    if not summaries:
        print("no dead-letter queues in this vhost")
        return
    table = Table("queue", "messages", "oldest", "error types (most common first)")
    for summary in summaries:
        types = ", ".join(f"{name}: {count}" for name, count in summary.error_types[:3])
        if len(summary.error_types) > 3:
            types += f", +{len(summary.error_types) - 3} more"
        if summary.messages > summary.sampled and summary.sampled:
            types += f" (first {summary.sampled})"
        table.add_row(summary.name, str(summary.messages), _age(summary.oldest_age()), types)
    console.print(table)


@dlq_app.command("show")
def dlq_show(
    queue: Annotated[str, typer.Argument(help="A dead-letter queue, e.g. orders.commands.dlq.")],
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most N messages.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The dead letters at the head of QUEUE: errors, attempts, bodies (not consumed).

    The messages stay in the queue: they are fetched without acknowledgement and returned.
    """
    from conveyor.operations.dead_letters import body_preview, show

    result = _run_dlq(lambda s, api: show(s, api, queue, limit))
    if result.warning:
        print(f"conveyor: {result.warning}", file=sys.stderr)
    if as_json:
        _print_json(
            {
                "queue": result.queue,
                "messages": result.messages,
                "dead_letters": [letter.as_json() for letter in result.dead_letters],
            }
        )
        return
    # Everything shown came from whoever published the message: escape what would drive
    # the terminal (escape sequences) or fake a line (newlines).
    for number, letter in enumerate(result.dead_letters, 1):
        failure = f" ({letter.failure_class})" if letter.failure_class else ""
        print(
            escape_controls(
                f"#{number} message_id={letter.message_id} error={letter.error_type}{failure}"
            )
        )
        if letter.error_message:
            print(f"   message: {escape_controls(letter.error_message)}")
        print(
            escape_controls(
                f"   attempts {letter.attempts if letter.attempts is not None else '-'}, "
                f"first failure {letter.first_failure_at or '-'}, "
                f"last failure {letter.last_failure_at or '-'}, "
                f"dead-lettered {letter.dead_lettered_at or '-'}, from {letter.original_queue}"
            )
        )
        print(f"   body: {body_preview(letter.body)}")
    print(
        f"{len(result.dead_letters)} of {result.messages} message(s) in {result.queue} shown; "
        "they stay in the queue"
    )


@dlq_app.command("redrive")
def dlq_redrive(
    queue: Annotated[str, typer.Argument(help="A dead-letter queue, e.g. orders.commands.dlq.")],
    limit: Annotated[int | None, typer.Option(min=1, help="Move at most N messages.")] = None,
    error_type: Annotated[
        str | None,
        typer.Option(
            help="Only messages with this error type (x-conveyor-error-type, or the broker's "
            "reason such as delivery_limit); the others stay, re-appended at the tail."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Messages per transaction.")
    ] = 500,
) -> None:
    """Move dead letters back to their original queue, with a fresh retry budget.

    Exactly once: each batch moves in one AMQP transaction, so an interruption leaves every
    message either in the DLQ or in its queue, never in both or neither.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from conveyor.operations.dead_letters import RedriveResult, redrive

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[moved]} moved"),
        console=Console(stderr=True),
        disable=not sys.stderr.isatty(),
    )
    task = progress.add_task(f"re-driving {queue}", total=None, moved=0)

    def report(result: RedriveResult, to_examine: int) -> None:
        progress.update(task, completed=result.examined, total=to_examine, moved=result.moved)

    async def work(settings: Settings, api: Any) -> RedriveResult:
        with progress:
            return await redrive(
                settings,
                api,
                queue,
                limit=limit,
                error_type=error_type,
                batch_size=batch_size,
                progress=report,
            )

    result = _run_dlq(work)
    where = ", ".join(f"{count} to {name}" for name, count in sorted(result.destinations.items()))
    line = f"moved {result.moved} message(s) from {queue}" + (f" ({where})" if where else "")
    if result.kept:
        line += f"; {result.kept} stay in {queue}, re-appended at its tail"
    print(line)


@dlq_app.command("purge")
def dlq_purge(
    queue: Annotated[str, typer.Argument(help="A dead-letter queue, e.g. orders.commands.dlq.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete every message of a dead-letter queue (asks first, unless --yes)."""
    from conveyor.operations.dead_letters import message_count, purge

    if not yes:
        count = _run_dlq(lambda s, api: message_count(s, api, queue))
        if not sys.stdin.isatty():
            fail(f"not purging {count} message(s) from {queue}: no terminal to ask on; use --yes")
        if not typer.confirm(f"Purge {count} message(s) from {queue}? They cannot be recovered"):
            fail(f"not purged: {queue} keeps its messages")
    purged = _run_dlq(lambda s, api: purge(s, api, queue))
    print(f"purged {purged} message(s) from {queue}")


@app.command()
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


@app.command()
def asyncapi(
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    yaml: Annotated[bool, typer.Option("--yaml", help="YAML instead of JSON.")] = False,
    schemas: Annotated[
        str | None,
        typer.Option(
            help="Also write the JSON Schemas of commands, outcomes and integration events "
            "into this directory (docs/schemas)."
        ),
    ] = None,
) -> None:
    """The AsyncAPI 3.0 document of every channel: commands, outcomes, integration events."""
    from pathlib import Path

    from conveyor.asyncapi import document_text, write_json_schemas

    if schemas is not None:
        written = write_json_schemas(Path(schemas))
        Console(stderr=True).print(f"wrote {len(written)} JSON Schemas under {schemas}")
    text = document_text(load_settings(), yaml=yaml)
    if output is None:
        sys.stdout.write(text)
        return
    with open(output, "w", encoding="utf-8") as handle:
        handle.write(text)
    console.print(f"wrote {output}")
