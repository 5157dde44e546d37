"""The results: a table on stdout in the style of RabbitMQ's Jepsen runs, and the same as
JSON in chaos/results/<timestamp>.json."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from chaos.checker import Verdict

RESULTS = Path(__file__).resolve().parent / "results"


def print_table(verdicts: Sequence[Verdict], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="conveyor chaos")
    for column in (
        "#",
        "scenario",
        "sent",
        "confirmed",
        "applied (acc./rej.)",
        "lost",
        "dup.",
        "unexp.",
        "dead letters",
        "RM = rebuild",
        "s",
        "result",
    ):
        table.add_column(column, overflow="fold")
    for v in verdicts:
        mismatches = ", ".join(f"{k}: {n}" for k, n in v.read_model_mismatches.items() if n)
        table.add_row(
            str(v.scenario),
            v.title,
            str(v.sent),
            f"{v.confirmed}" + (f" ({v.indeterminate} indeterminate)" if v.indeterminate else ""),
            f"{v.applied} ({v.accepted}/{v.rejected})",
            _red_unless_zero(v.lost),
            _red_unless_zero(v.duplicated)
            + (
                f" (workflow cmds {v.derived}: lost {v.derived_lost}, dup. {v.derived_duplicated})"
                if v.derived
                else ""
            ),
            _red_unless_zero(v.unexpected),
            ", ".join(f"{q}: {n}" for q, n in v.dead_letters.items()) or "0",
            "yes" if v.read_models_equal_rebuild else f"[red]NO[/] {mismatches}",
            f"{v.seconds:.0f}",
            "[green]PASS" if v.passed else "[red]FAIL",
        )
    console.print(table)
    for v in verdicts:
        console.print(f"scenario {v.scenario}: faults: {v.faults}")
        for problem in v.problems:
            console.print(f"[red]scenario {v.scenario}: {problem}")
        for note in v.notes:
            console.print(f"scenario {v.scenario}: {note}")
        if v.lost_ids:
            console.print(f"[red]scenario {v.scenario}: lost {v.lost_ids[:10]}")
        if v.duplicated_ids:
            console.print(f"[red]scenario {v.scenario}: duplicated {v.duplicated_ids[:10]}")
        if v.derived_duplicated_ids:
            console.print(
                f"[red]scenario {v.scenario}: workflow commands applied twice "
                f"{v.derived_duplicated_ids[:10]}"
            )
        for key, value in v.figures.items():
            console.print(f"scenario {v.scenario}: {key}: {value}")


def _red_unless_zero(value: int) -> str:
    return str(value) if value == 0 else f"[red]{value}"


def write_json(verdicts: Sequence[Verdict], parameters: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    now = datetime.now(UTC)
    path = RESULTS / f"{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(
        json.dumps(
            {
                "finished_at": now.isoformat(),
                "parameters": parameters,
                "passed": all(v.passed for v in verdicts),
                "scenarios": [v.as_json() for v in verdicts],
            },
            indent=2,
        )
        + "\n"
    )
    return path
