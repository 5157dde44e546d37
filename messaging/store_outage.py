"""Pausing consumers while the store they write to is away.

A retry ladder measured in minutes turns any longer outage (a failover, an upgrade, a full
disk, a locked SQLite file) into a dead-letter queue full of healthy messages. So a failure
of the *store* does not spend a message's attempts. The first delivery that meets one
reports it here and pauses every consumer of that store: they stop taking deliveries and
hand back what they hold, attempts unspent (messaging/consumer.py). That first delivery
stays behind as the probe's canary: this object pings the store with growing back-off
(tenacity) and, once it answers, processes the canary again. Only when the canary goes
through — a store can answer a ping yet refuse the real work, as a SQLite file locked by
another process reads fine but refuses writes — do the consumers resume.

The canary is held unacknowledged for the length of the outage; RabbitMQ's
`consumer_timeout` (30 min by default) bounds that: past it the broker closes the channel
and the canary goes back to its queue like any returned delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from conveyor.observability.metrics import STORE_PAUSED, STORE_PAUSES

logger = logging.getLogger("conveyor.outage")

Probe = Callable[[], Awaitable[None]]
Canary = Callable[[], Awaitable[None]]
"""Processes the held delivery again; raises StillAway while the store is still away."""


class StillAway(Exception):
    """The canary met the store's failure again (its cause)."""


class Pausable(Protocol):
    async def stop_consuming(self) -> None: ...

    async def resume_consuming(self) -> None: ...


class StoreOutage:
    """The pause of every consumer of one store (`name`: "event_store", "read_store")."""

    def __init__(
        self,
        name: str,
        probe: Probe,
        *,
        first_delay: float = 0.5,
        max_delay: float = 30.0,
        probe_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._probe = probe
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._probe_timeout = probe_timeout
        self._consumers: list[Pausable] = []
        self._prober: asyncio.Task[None] | None = None
        self._canary_done: asyncio.Future[BaseException | None] | None = None
        self._closed = False
        self.paused_since: float | None = None
        self.reason = ""
        self.probes = 0
        self._paused_gauge = STORE_PAUSED.labels(name)
        self._pauses = STORE_PAUSES.labels(name)
        self._paused_gauge.set(0)

    def attach(self, consumer: Pausable) -> None:
        self._consumers.append(consumer)

    @property
    def paused(self) -> bool:
        return self.paused_since is not None

    def describe(self) -> str | None:
        """None while consuming; else what /health/ready and the logs say."""
        if self.paused_since is None:
            return None
        return (
            f"consumers paused for {time.monotonic() - self.paused_since:.0f}s: "
            f"{self.name} unavailable ({self.reason}); {self.probes} probes so far"
        )

    async def report(self, failure: BaseException, canary: Canary) -> BaseException | None:
        """A delivery failed because the store is away.

        If the consumers are paused already, returns StillAway at once: hand the delivery
        back. Otherwise pauses them, keeps this delivery as the canary and returns once
        the canary went through: None if it was settled, or the exception its processing
        raised (other than the store's failure); StillAway if the pause ended without it
        (shutting down): hand it back then."""
        if self.paused_since is not None or self._closed:
            return StillAway()
        self.paused_since = time.monotonic()
        self.reason = f"{type(failure).__name__}: {failure}"[:500]
        self._paused_gauge.set(1)
        self._pauses.inc()
        logger.warning(
            "%s unavailable: pausing %d consumer(s) until it answers (%s)",
            self.name,
            len(self._consumers),
            self.reason,
        )
        done: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._canary_done = done
        for consumer in self._consumers:
            try:
                await consumer.stop_consuming()
            except Exception:  # the broker link may be down too; the probe still runs
                logger.exception("could not stop a consumer of %s", self.name)
        self._prober = asyncio.create_task(
            self._probe_until_back(canary, done), name=f"probe:{self.name}"
        )
        return await done

    async def _probe_until_back(
        self, canary: Canary, done: asyncio.Future[BaseException | None]
    ) -> None:
        self.probes = 0
        outcome: BaseException | None = None
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(Exception),
                wait=wait_exponential_jitter(
                    multiplier=self._first_delay, max=self._max_delay, jitter=self._first_delay
                ),
                before_sleep=self._log_probe,
                reraise=True,
            ):
                with attempt:
                    if attempt.retry_state.attempt_number == 1:
                        await asyncio.sleep(self._first_delay)
                    self.probes += 1
                    await asyncio.wait_for(self._probe(), self._probe_timeout)
                    try:
                        await canary()
                    except StillAway as away:  # answers a ping, still refuses the work
                        raise (away.__cause__ or away) from None
                    except Exception as failure:  # settled or not, the store answered
                        outcome = failure
        except asyncio.CancelledError:
            if not done.done():
                done.set_result(StillAway())
            raise
        if not done.done():
            done.set_result(outcome)
        logger.warning(
            "%s answers again after %.1fs (%d probes): consumers resume",
            self.name,
            time.monotonic() - (self.paused_since or time.monotonic()),
            self.probes,
        )
        self.paused_since = None
        self._paused_gauge.set(0)
        for consumer in self._consumers:
            # A consumer left stopped would wait forever: retry while the broker recovers.
            async for attempt in AsyncRetrying(
                wait=wait_exponential_jitter(multiplier=1.0, max=self._max_delay),
                before_sleep=lambda state: logger.warning(
                    "could not resume a consumer of %s: %s", self.name, state.outcome
                ),
            ):
                with attempt:
                    await consumer.resume_consuming()

    def _log_probe(self, state: object) -> None:
        logger.info("%s still unavailable after %d probes", self.name, self.probes)

    async def close(self) -> None:
        """Stop probing (shutting down): a held canary is handed back."""
        self._closed = True
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._prober
            self._prober = None
