"""The gateway: follows the global log from a leased checkpoint and publishes each stored
event as an integration event — the event store is the outbox.

    loop: hold the lease → read a page after the checkpoint → publish the whole page
          pipelined (every publish awaits its own confirm, all in flight together) →
          save the checkpoint only after every confirm → repeat.

A crash between publishing and saving republishes the page on restart: duplicates are
possible (consumers dedupe by message_id = event_id), loss is not. A second gateway waits
for the lease and takes over when the first stops renewing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange

from conveyor.aggregates import AGGREGATES
from conveyor.eventstore.port import EventStore
from conveyor.observability.metrics import GATEWAY_LAG, GATEWAY_PUBLISHED
from conveyor.readmodels.checkpoints import LeasedCheckpoint, LeaseLost
from conveyor.readmodels.progress import POSITION_HEADER
from messaging.customers import IntegrationMapper
from messaging.integration_events import EVENTS_EXCHANGE, IntegrationEvent, encode

logger = logging.getLogger("conveyor.gateway")

EVENTS = RabbitExchange(EVENTS_EXCHANGE, type=ExchangeType.TOPIC, durable=True)
GATEWAY_CHECKPOINT = "gateway"


class EventGateway:
    def __init__(
        self,
        store: EventStore,
        broker: RabbitBroker,
        checkpoint: LeasedCheckpoint,
        *,
        batch_size: int = 500,
        idle_poll: float = 0.2,
        wait_for_append: Callable[[float], Awaitable[None]] | None = None,
        publish_timeout: float | None = None,
        user_id: str | None = None,
    ) -> None:
        self._store = store
        # Stamped on every event; the broker refuses it unless it is our login, so a
        # projection can tell the gateway's events from anyone else's.
        self._user_id = user_id
        self._broker = broker
        self._checkpoint = checkpoint
        self._customers = IntegrationMapper(store, AGGREGATES)
        self._batch_size = batch_size
        self._idle_poll = idle_poll
        self._wait_for_append = wait_for_append
        self._publish_timeout = publish_timeout
        self.published = 0
        self.relayed_position = 0
        """The global-log position up to which every event is published and checkpointed
        (updated together with `published`, so the two always agree)."""
        self.active = False
        self.last_error: str | None = None

    @staticmethod
    def new_owner() -> str:
        return f"gateway-{uuid.uuid4().hex[:12]}"

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; never raises for a transient failure."""
        backoff = 0.5
        while not stop.is_set():
            try:
                if not await self._checkpoint.try_acquire():
                    self.active = False
                    await _sleep_unless(stop, self._checkpoint.ttl / 3)
                    continue
                if not self.active:
                    logger.info(
                        "gateway %s is active from position %d",
                        self._checkpoint.owner,
                        self._checkpoint.position,
                    )
                self.active = True
                await self._relay(stop)
                backoff = 0.5
            except LeaseLost as lost:
                self.active = False
                logger.warning("%s; standing by", lost)
            except Exception as error:  # store, read store or broker trouble: retry later
                self.last_error = f"{type(error).__name__}: {error}"
                logger.warning("gateway paused %.1fs: %s", backoff, self.last_error)
                with contextlib.suppress(Exception):  # the lag grows while the relay waits
                    GATEWAY_LAG.set(await self._seconds_behind(self._checkpoint.position))
                await _sleep_unless(stop, backoff)
                backoff = min(backoff * 2, 10.0)
        if self.active:
            with contextlib.suppress(Exception):
                await self._checkpoint.release()
        self.active = False

    async def _relay(self, stop: asyncio.Event) -> None:
        position = self._checkpoint.position
        renew_every = self._checkpoint.ttl / 3
        last_saved = time.monotonic()
        while not stop.is_set():
            page = await self._store.read_all(after=position, limit=self._batch_size)
            if not page:
                GATEWAY_LAG.set(0)
                if time.monotonic() - last_saved > renew_every:
                    await self._checkpoint.renew()
                    last_saved = time.monotonic()
                await self._idle(stop)
                continue
            mapped = [
                (await self._customers.integration_event(event), event.position) for event in page
            ]
            events = [(event, at) for event, at in mapped if event is not None]
            async with self._lease_renewed():
                await asyncio.gather(*(self._publish(event, at) for event, at in events))
            position = page[-1].position
            await self._checkpoint.save(position)
            last_saved = time.monotonic()
            self.published += len(events)
            self.relayed_position = position
            GATEWAY_PUBLISHED.inc(len(events))
            # A short page reached the head; after a full one, ask how far the head is.
            full = len(page) == self._batch_size
            GATEWAY_LAG.set(await self._seconds_behind(position) if full else 0)

    async def _seconds_behind(self, position: int) -> float:
        # Positions are not event counts (KurrentDB's are byte offsets): the age of the
        # oldest event still to publish is a lag that means the same on every store.
        oldest = await self._store.read_all(after=position, limit=1)
        return max(0.0, time.time() - oldest[0].occurred_at.timestamp()) if oldest else 0.0

    async def _publish(self, event: IntegrationEvent, position: int) -> None:
        # aio-pika waits for a blocked connection *before* its own publish timeout starts:
        # only a deadline around the whole call bounds it.
        async with asyncio.timeout(self._publish_timeout):
            await self._publish_now(event, position)

    async def _publish_now(self, event: IntegrationEvent, position: int) -> None:
        await self._broker.publish(
            encode(event),
            exchange=EVENTS,
            routing_key=event.routing_key,
            # Lets projections report how far they are in the global log (conveyor status).
            headers={POSITION_HEADER: position},
            message_id=str(event.event_id),
            message_type=event.type,
            content_type="application/json",
            correlation_id=event.correlation_id,
            user_id=self._user_id,
            persist=True,
            # No binding for a routing key means nobody subscribed: not an error.
            mandatory=False,
            timeout=self._publish_timeout,
        )

    @contextlib.asynccontextmanager
    async def _lease_renewed(self) -> AsyncIterator[None]:
        """Keep the lease while a page is in flight: publishes slowed by a blocked broker
        (bounded by the publish timeout) must not outlast the lease, or a standby takes
        over and publishes the same page at the same time. A renewal that finds the lease
        taken (LeaseLost) stops renewing, and LeaseLost is raised once the page's publishes
        have ended (they are not cancelled: its checkpoint save would be fenced anyway)."""
        done = asyncio.Event()

        async def renew() -> None:
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), self._checkpoint.ttl / 3)
                if not done.is_set():
                    try:
                        await self._checkpoint.renew()
                    except LeaseLost:
                        raise
                    except Exception as error:  # a locked or busy store: the next one may do
                        # Ending the renewals here let the lease lapse mid-page (a standby
                        # then publishes the same page), and re-raising after the page threw
                        # the confirmed page away.
                        logger.warning("gateway lease renewal failed, retrying: %s", error)

        renewer = asyncio.create_task(renew(), name="gateway-lease")
        try:
            yield
        finally:
            done.set()  # let a renewal under way finish: cancelling it would lose its revision
            await renewer

    async def _idle(self, stop: asyncio.Event) -> None:
        if self._wait_for_append is not None:
            await self._wait_for_append(self._idle_poll)
        else:
            await _sleep_unless(stop, self._idle_poll)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
