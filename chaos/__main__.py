"""`python -m chaos [--scenarios 1,2,…] [--quick] [--commands N]` (`make chaos`)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from dataclasses import asdict

from rich.console import Console

from chaos.checker import Verdict
from chaos.report import print_table, write_json
from chaos.scenarios import (
    ALARM_NODE,
    Sizes,
    all_scenarios,
    run_scenario,
    single_broker_scenarios,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument(
        "--scenarios",
        default=",".join(
            str(n) for n in single_broker_scenarios() if n != 10 or os.environ.get(ALARM_NODE)
        ),
        help="comma-separated scenario numbers (default: all but the cluster ones; 10 only "
        f"with {ALARM_NODE} set). 4 restarts the local RabbitMQ; 10 alarms the node "
        f"{ALARM_NODE} names: never give it a shared broker. 14-16 need the local cluster of "
        "`make cluster` (`make chaos-cluster`).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (about 500 commands, 100 fulfilment workflows)",
    )
    parser.add_argument(
        "--commands", type=int, default=None, help="commands of scenario 1 (default 5000)"
    )
    parser.add_argument(
        "--store-away",
        type=float,
        default=300.0,
        help="seconds scenario 12 keeps both stores locked (default 300)",
    )
    return parser.parse_args(argv)


async def run(numbers: list[int], sizes: Sizes, console: Console) -> list[Verdict]:
    verdicts = []
    for number in numbers:
        console.print(f"[bold]scenario {number}: {all_scenarios()[number].title}…")
        verdict = await run_scenario(number, sizes)
        console.print(
            f"  {'PASS' if verdict.passed else 'FAIL'}: lost {verdict.lost}, duplicated "
            f"{verdict.duplicated}"
            + (
                f", workflow commands {verdict.derived} (lost {verdict.derived_lost}, "
                f"duplicated {verdict.derived_duplicated})"
                if verdict.derived
                else ""
            )
            + f", read models = rebuild: {verdict.read_models_equal_rebuild} "
            f"({verdict.seconds:.0f}s)"
        )
        verdicts.append(verdict)
    return verdicts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        numbers = [int(part) for part in args.scenarios.split(",") if part.strip()]
    except ValueError:
        print(f"--scenarios: not a list of numbers: {args.scenarios}", file=sys.stderr)
        return 2
    unknown = [n for n in numbers if n not in all_scenarios()]
    if unknown:
        print(
            f"--scenarios: no scenario {unknown}; choose from {sorted(all_scenarios())}",
            file=sys.stderr,
        )
        return 2
    sizes = Sizes.quick(args.commands) if args.quick else Sizes(commands=args.commands or 5000)
    sizes = dataclasses.replace(sizes, store_away_seconds=args.store_away)
    logging.basicConfig(level=logging.WARNING)
    console = Console(width=max(Console().width, 150))
    verdicts = asyncio.run(run(numbers, sizes, console))
    print_table(verdicts, console)
    path = write_json(verdicts, {"scenarios": numbers, **asdict(sizes)})
    console.print(f"results: {path}")
    return 0 if all(v.passed for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
