"""Results: one JSON document, a PNG chart next to it, and a table on the terminal."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.figures import Figure


def summarise(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"median": None, "min": None, "max": None}
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
    }


def evaluate(figure: Figure) -> dict[str, Any]:
    value = summarise(figure.values)
    reference = summarise(figure.references)
    ratio = (
        value["median"] / reference["median"]
        if value["median"] is not None and reference["median"]
        else None
    )
    met: bool | None
    if figure.target_kind == "ratio_at_least":
        met = ratio is not None and ratio >= figure.threshold
    elif figure.target_kind == "ratio_at_most":
        met = ratio is not None and ratio <= figure.threshold
    elif figure.target_kind == "value_at_most":
        met = value["median"] is not None and value["median"] <= figure.threshold
    else:  # memory: the peak under the threshold and flat after warm-up in every run
        runs = figure.details.get("runs", [])
        met = (
            value["median"] is not None
            and max(figure.values) < figure.threshold
            and all(run["flat"] for run in runs)
        )
    return {
        "title": figure.title,
        "unit": figure.unit,
        "value": {**value, "samples": figure.values},
        "reference": {"what": figure.reference, **reference, "samples": figure.references},
        "ratio": ratio,
        "target": figure.target,
        "met": met,
        "details": figure.details,
    }


def machine() -> dict[str, Any]:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_commit() -> str | None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}{' (uncommitted changes)' if dirty else ''}"


def document(
    figures: list[Figure],
    *,
    started: datetime,
    rabbitmq: str | None,
    settings: dict[str, Any],
    errors: dict[str, str],
) -> dict[str, Any]:
    return {
        "started_at": started.isoformat().replace("+00:00", "Z"),
        "finished_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "machine": {**machine(), "rabbitmq": rabbitmq},
        "git_commit": git_commit(),
        "settings": settings,
        "figures": {figure.key: evaluate(figure) for figure in figures},
        "errors": errors,
    }


def write(result: dict[str, Any], out: Path, stamp: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{stamp}.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    png_path = out / f"{stamp}.png"
    chart(result, png_path)
    return json_path, png_path


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = result["figures"]
    ratios = {key: f for key, f in figures.items() if f["ratio"] is not None}
    memory = figures.get("memory")
    columns = 2 if memory and memory["details"].get("runs") else 1
    fig, axes = plt.subplots(1, columns, figsize=(7 * columns, 4.5), squeeze=False)
    ax = axes[0][0]
    names = list(ratios)
    values = [ratios[k]["ratio"] for k in names]
    colours = ["tab:green" if ratios[k]["met"] else "tab:red" for k in names]
    ax.barh(names, values, color=colours)
    for index, key in enumerate(names):
        entry = ratios[key]
        ref = entry["reference"]
        low = entry["value"]["min"] / ref["median"] if ref["median"] else None
        high = entry["value"]["max"] / ref["median"] if ref["median"] else None
        if low is not None and high is not None:
            ax.plot([low, high], [index, index], color="black", linewidth=1)
        ax.text(values[index], index, f"  {values[index]:.2f}x", va="center")
    ax.axvline(1.0, color="grey", linestyle=":")
    ax.set_xlabel("conveyor / reference (median; bar = min-max of conveyor's samples)")
    ax.set_title("ratio to the reference measured in the same run")
    if columns == 2 and memory is not None:
        mem_ax = axes[0][1]
        for number, run in enumerate(memory["details"]["runs"]):
            times = [t for t, _ in run["samples"]]
            rss = [m for _, m in run["samples"]]
            mem_ax.plot(times, rss, label=f"run {number + 1}: {run['commands']:,} commands")
        mem_ax.axhline(250, color="tab:red", linestyle="--", label="250 MB target")
        mem_ax.set_xlabel("seconds since `conveyor run` started")
        mem_ax.set_ylabel("RSS (MB)")
        mem_ax.set_title("memory while draining the backlog")
        mem_ax.legend(loc="lower right")
    fig.suptitle(f"conveyor bench {result['started_at']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def print_table(result: dict[str, Any], console: Console) -> None:
    table = Table(title="conveyor bench (median, min-max over repeats)")
    for column in ("figure", "conveyor", "reference", "ratio", "target", "met"):
        table.add_column(column)
    for key, entry in result["figures"].items():
        unit = entry["unit"]
        value, reference = entry["value"], entry["reference"]
        table.add_row(
            key,
            f"{_number(value['median'], unit)} {unit}\n"
            f"({_number(value['min'], unit)}-{_number(value['max'], unit)})",
            f"{_number(reference['median'], unit)}\n"
            f"({_number(reference['min'], unit)}-{_number(reference['max'], unit)})"
            if reference["median"] is not None
            else "—",
            f"{entry['ratio']:.2f}x" if entry["ratio"] is not None else "—",
            entry["target"],
            "[green]yes" if entry["met"] else "[red]no",
        )
    console.print(table)
    for key, message in result["errors"].items():
        console.print(f"[red]{key} failed: {message}")
