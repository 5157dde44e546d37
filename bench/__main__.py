"""`python -m bench` (`make bench`): every figure against its reference, in one run.

Needs the local RabbitMQ with its management API; creates its own vhost and deletes it
afterwards, keeps SQLite files in a temporary directory, writes
`<out>/<UTC timestamp>.json` and `.png` and prints a table. Targets are reported, never
asserted: the exit status is non-zero only when a figure could not be measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from bench import figures, report
from bench.figures import FIGURES, BenchContext, Figure, Sizes
from bench.rabbit import DEFAULT_AMQP_URL, DEFAULT_MANAGEMENT_URL, Management

DEFAULT_OUT = Path(__file__).parent / "results"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per figure (≥ 1)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(FIGURES),
        metavar="FIGURE",
        help=f"run only this figure (repeatable): {', '.join(FIGURES)}",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument(
        "--memory-commands", type=int, help="backlog size for the memory figure (100000)"
    )
    parser.add_argument(
        "--memory-repeat", type=int, default=1, help="repetitions of the memory figure (1)"
    )
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--management-url", default=DEFAULT_MANAGEMENT_URL)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.memory_repeat < 1:
        parser.error("--repeat and --memory-repeat must be at least 1")
    return args


async def run_figures(
    ctx: BenchContext, names: Sequence[str]
) -> tuple[list[Figure], dict[str, str]]:
    measured: list[Figure] = []
    errors: dict[str, str] = {}
    for name in names:
        ctx.log(f"{name} …")
        started = time.monotonic()
        try:
            measured.append(await FIGURES[name](ctx))
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        ctx.log(f"{name} took {time.monotonic() - started:.0f}s")
    return measured, errors


def stop_on_signals(management: Management, vhost_url: str) -> None:
    """On SIGINT or SIGTERM stop at once, but leave nothing behind: the child processes are
    terminated and the vhost deleted (an event loop stuck on a dead broker connection would
    otherwise never reach the `finally` that does it)."""

    def handler(signum: int, _frame: object) -> None:
        for child in list(figures.CHILDREN):
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
        deadline = time.monotonic() + 20
        for child in list(figures.CHILDREN):
            with contextlib.suppress(ChildProcessError, OSError):
                while time.monotonic() < deadline and os.waitpid(child.pid, os.WNOHANG) == (0, 0):
                    time.sleep(0.1)
                os.kill(child.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            management.delete_vhost_of(vhost_url)
        print(f"interrupted by signal {signum}; vhost deleted", file=sys.stderr)
        os._exit(128 + signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    console = Console(stderr=True)
    sizes = Sizes.quick() if args.quick else Sizes.full()
    if args.memory_commands:
        sizes = replace(sizes, memory_commands=args.memory_commands)
    names = args.only or list(FIGURES)
    started = datetime.now(UTC)
    management = Management(args.management_url)
    rabbitmq = management.rabbitmq_version()
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-bench-") as workdir,
        management.vhost(args.amqp_url) as amqp_url,
    ):
        stop_on_signals(management, amqp_url)
        ctx = BenchContext(
            amqp_url=amqp_url,
            workdir=Path(workdir),
            repeat=args.repeat,
            sizes=sizes,
            memory_repeat=args.memory_repeat,
            log=lambda line: console.print(line, highlight=False),
        )
        measured, errors = asyncio.run(run_figures(ctx, names))
    result = report.document(
        measured,
        started=started,
        rabbitmq=rabbitmq,
        settings={
            "repeat": args.repeat,
            "memory_repeat": args.memory_repeat,
            "quick": args.quick,
            "figures": names,
            "sizes": asdict(sizes),
            "sqlite_dir": tempfile.gettempdir(),
        },
        errors=errors,
    )
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    json_path, png_path = report.write(result, args.out, stamp)
    report.print_table(result, Console(width=max(Console().width, 110)))
    console.print(f"results: {json_path}\nchart:   {png_path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
