"""The AMQP connection every conveyor broker uses: aio-pika's robust connection, minus a
task that can never be stopped.

aio-pika (10.2) runs a robust connection's connect attempts in a background task that
catches `CancelledError` and tries again unless the connection was closed. When the
*first* `connect()` is cancelled — a shutdown, or a caller's timeout, while the broker
accepts TCP but never completes the AMQP handshake (a broker out of file handles does
exactly that) — nobody holds the connection to close it: the task reconnects forever and
swallows every cancellation, including asyncio's final `_cancel_all_tasks`, so the process
never exits. This connection closes itself when its connect does not complete.
"""

from __future__ import annotations

import asyncio

from aio_pika import RobustConnection
from aio_pika.abc import TimeoutType


class ClosingRobustConnection(RobustConnection):
    # The parameter keeps aio-pika's name: connect_robust passes it by keyword.
    async def connect(self, timeout: TimeoutType = None) -> None:  # noqa: ASYNC109
        try:
            await super().connect(timeout)
        except BaseException:
            # Shielded: a second cancellation must not leave the reconnect task behind.
            await asyncio.shield(self.close())
            raise
