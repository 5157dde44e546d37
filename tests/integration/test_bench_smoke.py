"""`python -m bench --quick --repeat 1`: every figure runs on tiny sizes and writes its results.

Only that the harness works end to end (its own vhost, `conveyor run` processes, both
references, JSON and chart); the numbers of a smoke run mean nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rabbit import AMQP_URL, MANAGEMENT_URL

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

FIGURES = (
    "pipeline",
    "command_core",
    "latency",
    "rebuild",
    "gateway",
    "memory",
    "long_streams",
    "workflows",
)


@pytest.mark.timeout(120)
def test_a_quick_bench_run_writes_every_figure(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--repeat",
            "1",
            "--memory-commands",
            "400",
            "--out",
            str(tmp_path),
            "--amqp-url",
            AMQP_URL,
            "--management-url",
            MANAGEMENT_URL,
        ],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=Path(__file__).parents[2],
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (result_file,) = tmp_path.glob("*.json")
    assert result_file.with_suffix(".png").stat().st_size > 0
    result = json.loads(result_file.read_text())

    assert {"started_at", "machine", "git_commit", "settings", "figures", "errors"} <= set(result)
    assert result["errors"] == {}
    assert result["machine"]["cpu_count"] >= 1
    assert result["machine"]["rabbitmq"]
    assert set(result["figures"]) == set(FIGURES)
    for key, figure in result["figures"].items():
        assert {"value", "reference", "ratio", "target", "met", "details"} <= set(figure), key
        assert len(figure["value"]["samples"]) == 1, key
        assert figure["value"]["median"] > 0, key
        assert isinstance(figure["met"], bool), key
        if key != "memory":
            assert figure["ratio"] > 0, key
            assert figure["reference"]["median"] > 0, key
    assert result["figures"]["memory"]["details"]["runs"][0]["samples"]
    assert "conveyor bench" in run.stdout
