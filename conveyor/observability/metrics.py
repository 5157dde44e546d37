"""The Prometheus metrics of a worker process, and the one store decorator that feeds them.

Metrics live in prometheus-client's default registry: Prometheus scrapes a process, so a
process has one set of numbers, whichever components it hosts. Label values come from
bounded sets only — queue and projection names, command/event types, error class names —
never from ids. Instrumented code looks its labelled children up once (`LabelCache`), so a
message costs a dict lookup and an increment, not a `labels()` call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from conveyor.eventstore.decorator import EventStoreDecorator
from conveyor.eventstore.port import AppendResult, NewEvent

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MESSAGES_HANDLED = Counter(
    "conveyor_messages_handled",
    "Messages processed to an outcome, by queue, command or event type and outcome: "
    "accepted, duplicate or rejected (a business rule said no) for commands; applied or "
    "duplicate for projections.",
    ["queue", "type", "outcome"],
)
MESSAGES_RETRIED = Counter(
    "conveyor_messages_retried",
    "Messages sent to a retry tier after a transient failure, by queue and error type.",
    ["queue", "error_type"],
)
MESSAGES_DEAD_LETTERED = Counter(
    "conveyor_messages_dead_lettered",
    "Messages sent to the dead-letter queue (invalid, or out of attempts), by queue and "
    "error type.",
    ["queue", "error_type"],
)
MESSAGES_UNSETTLED = Counter(
    "conveyor_messages_unsettled",
    "Deliveries that could not be settled (not even a retry or dead-letter copy could be "
    "published) and were rejected to the broker.",
    ["queue"],
)
HANDLING_SECONDS = Histogram(
    "conveyor_message_handling_seconds",
    "Time from a delivery reaching its consumer to its ack, by queue.",
    ["queue"],
    buckets=SECONDS,
)
APPEND_SECONDS = Histogram(
    "conveyor_event_store_append_seconds",
    "Event-store append latency (conflicts and failures included).",
    buckets=SECONDS,
)
GATEWAY_PUBLISHED = Counter(
    "conveyor_gateway_events_published",
    "Integration events published by the gateway (confirmed by the broker).",
)
GATEWAY_LAG = Gauge(
    "conveyor_gateway_lag_seconds",
    "Age of the oldest event in the global log not yet published by the gateway (0 when "
    "caught up), when last measured.",
)
PROJECTION_HEALED = Counter(
    "conveyor_projection_healed_total",
    "Events applied to a read model from the event store because the broker never delivered "
    "them (a gap filled, or found by the reconciler), by projection.",
    ["projection"],
)
PROJECTION_LAG = Gauge(
    "conveyor_projection_lag_seconds",
    "Seconds between the last applied event's occurred_at and its application, by projection.",
    ["projection"],
)

STORE_PAUSED = Gauge(
    "conveyor_consumers_paused",
    "1 while the consumers of a store are paused because it does not answer (messaging/"
    "store_outage.py), else 0; by store: event_store or read_store.",
    ["store"],
)
STORE_PAUSES = Counter(
    "conveyor_consumer_pauses",
    "Times the consumers of a store were paused because it did not answer, by store.",
    ["store"],
)
MESSAGES_HANDED_BACK = Counter(
    "conveyor_messages_handed_back",
    "Deliveries handed back to their queue unprocessed, their attempts unspent, because "
    "the store was away; by queue.",
    ["queue"],
)

M = TypeVar("M", bound=MetricWrapperBase)


class LabelCache(Generic[M]):
    """The labelled children of one metric, each created on first use. `fixed` are the
    leading label values every child shares (usually the queue name)."""

    __slots__ = ("_children", "_fixed", "_metric")

    def __init__(self, metric: M, *fixed: str) -> None:
        self._metric = metric
        self._fixed = fixed
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *labels: str) -> M:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*self._fixed, *labels)
        return child


class TimedAppends(EventStoreDecorator):
    """An event store whose appends are timed into APPEND_SECONDS; the rest is delegated."""

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        started = time.perf_counter()
        try:
            return await self.inner.append(stream_id, expected_version, events)
        finally:
            APPEND_SECONDS.observe(time.perf_counter() - started)
