"""No test run waits without bound: a whole-suite watchdog and a hard stop per test.

pytest-timeout (signal method) raises once in the main thread when a test overruns. What
follows is unbounded: a teardown that hangs — asyncio's final `_cancel_all_tasks` waiting
on a task that swallows its cancellation, a broker call that never answers — waits
forever, and CI only ends at its own limit. These watchdogs run on threads of their own:
past a deadline they write every thread's stack and every pending asyncio task to stderr,
then end the process with a failure.

- the whole session: CONVEYOR_TEST_SUITE_TIMEOUT seconds (default 900);
- one test, setup and teardown included: pytest-timeout's limit plus
  CONVEYOR_TEST_HARD_MARGIN seconds (default 60), so pytest-timeout reports first and this
  only fires when its report did not end the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import io
import os
import sys
import threading
from collections.abc import Iterator

import pytest

EXIT_CODE = 3


def _pending_tasks() -> list[asyncio.Task[object]]:
    # Another thread's loops cannot be asked for their tasks (asyncio.all_tasks needs to run
    # in the loop's thread); the garbage collector knows every task object.
    return [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and not o.done()]


def dump_state(reason: str, stream: io.TextIOBase | None = None) -> None:
    out = stream or sys.stderr
    out.write(f"\n{'=' * 30} watchdog: {reason} {'=' * 30}\n")
    out.write("--- every thread's stack ---\n")
    out.flush()
    faulthandler.dump_traceback(file=out, all_threads=True)
    tasks = _pending_tasks()
    out.write(f"--- {len(tasks)} pending asyncio task(s) ---\n")
    for task in tasks:
        buffer = io.StringIO()
        try:
            task.print_stack(limit=20, file=buffer)
        except Exception as exc:  # a diagnostic must not fail on a task mid-change
            buffer.write(f"{task!r}: stack unavailable ({exc!r})\n")
        out.write(buffer.getvalue())
    out.flush()


class Deadline:
    """A timer thread that dumps state and ends the process unless cancelled in time."""

    def __init__(self, seconds: float, reason: str) -> None:
        self._timer = threading.Timer(seconds, self._expire, args=(reason,))
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()

    @staticmethod
    def _expire(reason: str) -> None:
        # pytest captures file descriptor 2 while a test runs: give it back first, or the
        # dump would go to a capture file that nobody reads once the process ends.
        capture = _config.pluginmanager.getplugin("capturemanager") if _config else None
        if capture is not None:
            with contextlib.suppress(Exception):
                capture.suspend_global_capture(in_=False)
        dump_state(reason)
        sys.stderr.write(f"watchdog: {reason}; ending the test run (exit {EXIT_CODE})\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)


def _seconds(variable: str, default: float) -> float:
    return float(os.environ.get(variable, default))


_config: pytest.Config | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    global _config
    _config = session.config
    limit = _seconds("CONVEYOR_TEST_SUITE_TIMEOUT", 900)
    session.config.stash[_suite_key] = Deadline(
        limit, f"the test suite ran longer than {limit:.0f} s"
    )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    deadline = session.config.stash.get(_suite_key, None)
    if deadline is not None:
        deadline.cancel()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    marker = item.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker and marker.args else _ini_timeout(item.config)
    hard = limit + _seconds("CONVEYOR_TEST_HARD_MARGIN", 60)
    deadline = Deadline(hard, f"{item.nodeid} (setup, call and teardown) ran past {hard:.0f} s")
    try:
        yield
    finally:
        deadline.cancel()


def _ini_timeout(config: pytest.Config) -> float:
    try:
        return float(config.getini("timeout") or 0) or 300.0
    except ValueError:
        return 300.0


_suite_key = pytest.StashKey[Deadline]()
