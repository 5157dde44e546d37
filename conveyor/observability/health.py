"""Readiness of a worker process: the checks behind /health/ready.

Each check answers None (fine) or a short description of what is wrong. Ready means every
check is fine: the broker connection is up, every consumer is consuming (its channel open
and its consumer tag still known to the channel — the broker cancels a consumer whose
queue was deleted), no consumer is paused because its store is away, and every store
answers `ping()` within `timeout`. aio-pika's robust
connection restores the connection, channels and consumers by itself; the checks only
observe, so readiness comes back with them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from faststream.rabbit import RabbitBroker

Check = Callable[[], Awaitable[str | None]]

STORE_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, str] = field(default_factory=dict)
    """Every check by name: "ok" or what is wrong."""

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "ready" if self.ready else "not ready",
            "failed": [name for name, result in self.checks.items() if result != "ok"],
            "checks": self.checks,
        }


class ReadinessChecks:
    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    async def evaluate(self) -> Readiness:
        names = list(self._checks)
        results = await asyncio.gather(
            *(self._checks[name]() for name in names), return_exceptions=True
        )
        checks: dict[str, str] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                checks[name] = f"{type(result).__name__}: {result}"
            else:
                checks[name] = result or "ok"
        return Readiness(all(result == "ok" for result in checks.values()), checks)


async def _blocked(connection: Any) -> bool:
    """aiormq's `ready()` waits until the connection is up and not blocked (it tracks the
    broker's connection.blocked/unblocked): not ready at once means blocked."""
    try:
        await asyncio.wait_for(connection.ready(), timeout=0.05)
    except TimeoutError:
        return True
    return False


def broker_connection(broker: RabbitBroker) -> Check:
    async def check() -> str | None:
        connection = broker._connection  # FastStream's robust aio-pika connection
        if connection is None:
            return "not connected"
        if not connection.connected.is_set():
            return "connection down (reconnecting)"
        transport = connection.transport
        if transport is not None and await _blocked(transport.connection):
            # connection.blocked: a memory or disk alarm; every publish waits until it ends
            return "connection blocked by the broker (resource alarm)"
        return None

    return check


def consuming(subscriber: Any) -> Check:
    """Whether a FastStream Rabbit subscriber still has a live consumer."""

    async def check() -> str | None:
        queue, tag = subscriber._queue_obj, subscriber._consumer_tag
        if queue is None or tag is None:
            return "not consuming"
        channel = queue.channel
        if channel.is_closed:
            return "channel closed"
        underlay = await channel.get_underlay_channel()
        if tag not in underlay.consumers:
            return "consumer cancelled by the broker"
        return None

    return check


def pings(ping: Callable[[], Awaitable[None]], timeout: float = STORE_TIMEOUT) -> Check:
    async def check() -> str | None:
        try:
            await asyncio.wait_for(ping(), timeout)
        except TimeoutError:
            return f"no answer within {timeout:g}s"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    return check


def not_paused(describe: Callable[[], str | None]) -> Check:
    """Not ready while the consumers of a store are paused (messaging/store_outage.py)."""

    async def check() -> str | None:
        return describe()

    return check
