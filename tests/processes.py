"""Starting `python -m conveyor run` as an operator would, configured like a test's Settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conveyor.settings import Settings


def conveyor_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CONVEYOR_AMQP_URL": settings.amqp_url,
        "CONVEYOR_EVENT_STORE": settings.event_store,
        "CONVEYOR_READ_STORE": settings.read_store,
        "CONVEYOR_COMMAND_QUEUE": settings.command_queue,
        "CONVEYOR_PROJECTION_QUEUE_PREFIX": settings.projection_queue_prefix,
        "CONVEYOR_PROCESS_MANAGER_QUEUE": settings.process_manager_queue,
        "CONVEYOR_FULFILMENT_TIMEOUT": str(settings.fulfilment_timeout),
        "CONVEYOR_HTTP_PORT": "0",
        "CONVEYOR_OPS_PORT": "0",
        **extra,
    }


def start_conveyor(
    settings: Settings, only: str, log: Path, **extra_env: str
) -> subprocess.Popen[bytes]:
    """`conveyor run --only ONLY`, its output appended to `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", "run", "--only", only],
        env=conveyor_env(settings, **extra_env),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
