"""The suite's watchdogs (tests/watchdog.py) end a hung run with a diagnosis, as a run of
their own in a subprocess shows."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HANGS_IN_TEARDOWN = """
import asyncio

async def stubborn():
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # what aio-pika's reconnect loop did: cancellation swallowed

def test_teardown_never_ends():
    loop = asyncio.new_event_loop()
    loop.create_task(stubborn(), name="stubborn-task")
    while True:  # like asyncio's final cancel-and-wait, outliving pytest-timeout's one report
        try:
            loop.run_until_complete(asyncio.sleep(3600))
        except BaseException:
            pass
"""

RUNS_TOO_LONG = """
import time

def test_slow():
    time.sleep(30)
"""


def run_pytest(
    tmp_path: Path, source: str, timeout: str, **env: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_hung.py").write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.watchdog", "-p", "no:cacheprovider",
         "-o", f"timeout={timeout}", "-q", str(tmp_path / "test_hung.py")],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def test_a_task_that_ignores_cancellation_ends_the_run_with_its_stack(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, HANGS_IN_TEARDOWN, "1", CONVEYOR_TEST_HARD_MARGIN="1")
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert "every thread's stack" in output
    assert "stubborn-task" in output  # the pending task, named, with its stack
    assert "in stubborn" in output


def test_a_suite_past_its_limit_ends_with_a_diagnosis(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, RUNS_TOO_LONG, "0", CONVEYOR_TEST_SUITE_TIMEOUT="2")
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert "the test suite ran longer than 2 s" in output
    assert "in test_slow" in output
