"""A projection worker's consumer: integration events in, one read model updated.

not from the gateway       → dead-letter queue at once (UntrustedPublisher): its body,
    its position header and its provenance are not believed
not an integration event  → dead-letter queue at once
duplicate (already applied) → acked, nothing written
gap (an earlier event of the order has not been applied yet) → the missing versions are
    read from the event store and applied first (conveyor/readmodels/healing.py): a copy that was
    only reordered arrives later as a duplicate, one that was lost is healed; without an
    event store, or if it fails, → retry ladder
the store is away          → consumers paused, delivery handed back (messaging/consumer.py)
the store refused the document for what it is (too large, invalid) → dead-letter queue at once
any other failure          → retry ladder, then dead-letter queue
"""

from __future__ import annotations

import logging
import time

from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import RabbitBroker

from conveyor.application.aggregates import Registry
from conveyor.observability.logs import bind_message
from conveyor.observability.metrics import MESSAGES_HANDLED, PROJECTION_LAG, LabelCache
from conveyor.readmodels.applier import ProjectionApplier, ProjectionGap, feeds
from conveyor.readmodels.healing import GapFiller
from conveyor.readmodels.progress import ProgressTracker, position_of
from conveyor.readmodels.projections import ContractViolation
from messaging.consumer import QueueConsumer, StoreAway
from messaging.failures import FailureRouter, is_permanent
from messaging.integration_events import NotAnIntegrationEvent, decode
from messaging.store_outage import StoreOutage
from messaging.topology import WorkQueue

logger = logging.getLogger("conveyor.projections")


class ProjectionConsumer(QueueConsumer):
    def __init__(
        self,
        broker: RabbitBroker,
        queue: WorkQueue,
        applier: ProjectionApplier,
        failures: FailureRouter,
        progress: ProgressTracker | None = None,
        gaps: GapFiller | None = None,
        outage: StoreOutage | None = None,
        *,
        aggregates: Registry,
        trusted_publishers: frozenset[str] | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        super().__init__(broker, queue, failures, outage)
        self.applier = applier
        self.aggregates = aggregates
        self.trusted_publishers = trusted_publishers
        """RabbitMQ users whose deliveries are applied (the broker validates `user_id`);
        None trusts every delivery (tests that feed a projection directly)."""
        self.max_message_bytes = max_message_bytes
        self.progress = progress or ProgressTracker(applier.projection.name)
        self._gaps = gaps
        self.description = (
            f"Integration events applied to the {applier.projection.name} read model."
        )
        self.applied = 0
        self.duplicates = 0
        self._handled = LabelCache(MESSAGES_HANDLED, queue.name)
        self._lag = PROJECTION_LAG.labels(applier.projection.name)

    async def prepare(self) -> None:
        await self.applier.ensure_collection()

    async def process(self, raw: AbstractIncomingMessage) -> None:
        if self.trusted_publishers is not None and raw.user_id not in self.trusted_publishers:
            reason = (
                f"published by user {raw.user_id!r}, not by the gateway "
                f"({', '.join(sorted(self.trusted_publishers))}): not applied"
            )
            route = await self.failures.dead_letter(raw, "UntrustedPublisher", reason)
            logger.warning(
                "event %r dead-lettered to %s: %s", raw.message_id, route.destination, reason
            )
            return
        if self.max_message_bytes is not None and len(raw.body) > self.max_message_bytes:
            reason = f"message body is {len(raw.body)} bytes; the limit is {self.max_message_bytes}"
            route = await self.failures.dead_letter(raw, "MessageTooLarge", reason)
            logger.warning(
                "event %r dead-lettered to %s: %s", raw.message_id, route.destination, reason
            )
            return
        try:
            event = decode(raw.body, self.aggregates)
        except NotAnIntegrationEvent as invalid:
            route = await self.failures.dead_letter(raw, "InvalidIntegrationEvent", str(invalid))
            logger.warning(
                "invalid event %s dead-lettered to %s", raw.message_id, route.destination
            )
            return
        if not feeds(self.applier.projection.name, event):
            # Another aggregate's event (the queue binds only its feeders' routing keys, so
            # only a hand-made binding brings one here): nothing to apply.
            logger.debug(
                "%s: %s is not one of its events", self.applier.projection.name, event.type
            )
            return
        bind_message(event.correlation_id, event.causation_id)
        try:
            try:
                result = await self.applier.apply(event)
            except ProjectionGap:
                if self._gaps is None:
                    raise
                await self._gaps.fill(self.applier, event)
                result = "updated"
        except ContractViolation as violation:  # no retry can make this event applicable
            route = await self.failures.dead_letter(raw, "ContractViolation", str(violation))
            logger.warning(
                "event %s dead-lettered to %s: %s", raw.message_id, route.destination, violation
            )
            return
        except Exception as failure:
            if self.store_is_away(failure):
                raise StoreAway() from failure
            if is_permanent(failure):
                route = await self.failures.permanent_failure(raw, failure)
                logger.warning(
                    "event %s dead-lettered to %s: the store refused it: %s",
                    raw.message_id,
                    route.destination,
                    failure,
                )
                return
            route = await self.failures.retry_later(raw, failure)
            logger.warning(
                "%s: event %s (%s v%d of %s) failed on attempt %d, sent to %s: %s",
                self.applier.projection.name,
                event.event_id,
                event.type,
                event.version,
                event.aggregate_id,
                route.attempts,
                route.destination,
                failure,
                extra={"correlation_id": event.correlation_id},
            )
            return
        if result == "duplicate":
            self.duplicates += 1
            self._handled(event.type, "duplicate").inc()
        else:
            self.applied += 1
            self._handled(event.type, "applied").inc()
            self._lag.set(time.time() - event.occurred_at.timestamp())
        logger.debug(
            "%s: %s %s (%s v%d of %s)",
            self.applier.projection.name,
            "skipped duplicate" if result == "duplicate" else "applied",
            event.event_id,
            event.type,
            event.version,
            event.aggregate_id,
        )
        # A duplicate is applied too: the read model already holds it.
        self.progress.observe(position_of(raw.headers))
