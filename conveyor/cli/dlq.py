"""`conveyor dlq ...`: list the dead-letter queues, show, re-drive and purge their messages."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from conveyor.cli.app import console, fail, print_json, run_async
from conveyor.observability.logs import escape_controls
from conveyor.settings import Settings

T = TypeVar("T")

dlq_app = typer.Typer(
    help="Dead letters: list the dead-letter queues, show, re-drive and purge their messages.",
    no_args_is_help=True,
)


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
        print_json([summary.as_json() for summary in summaries])
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
        print_json(
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
