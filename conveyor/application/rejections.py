"""Durable rejections: a rejected command is as final as an accepted one.

The handler records a business rejection as a marker event, `CommandRejected`, **in the
aggregate's own stream, at the version it decided against**, before the outcome is
published. Acceptance and rejection of one command therefore contend on one stream and one
expected version (and on one event id, derived from the command id): whichever copy of a
command appends first wins, the other gets a conflict, reloads, finds the command in the
stream and reports that outcome. A rejected command can never later be accepted — not
when a client resends it as a new message, not when two copies race across two states of
the aggregate — and looking the record up is free: the handler loads the stream anyway.

The marker is bookkeeping, not a fact of the domain: it has no integration contract (the
gateway, rebuilds, status and the chaos checker ask the registry, which knows no contract
for it), folds and history skip it, and it does not count as an aggregate version: the
version reported in outcomes, integration events and read models counts domain events only
(conveyor/application/aggregates.py), so projections' version guards, their gap detection
and healing never see a hole where a marker sits. The alternative, publishing stream
versions and a `previous_version` in the envelope, would have changed what every consumer
of `orders.*` must check; counting domain events changes nothing for them.

Earlier versions kept rejections elsewhere, and those records stay final:
* `rejections-<order_id>/<command_id>` (one stream per rejected command): read for every
  command of an aggregate that has such legacy records — the cost those versions paid
  already, and a client resending an old rejected command as a fresh message is covered;
* `rejections-<order_id>` (all of an order's in one stream): read for deliveries that may
  have been handled before (redelivered, retried, re-driven), as before.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from conveyor.application.aggregates import AGGREGATE_VERSION, COMMAND_REJECTED, is_marker
from conveyor.eventstore.port import RecordedEvent

REJECTIONS_PREFIX = "rejections-"
COMMAND_REJECTED_SCHEMA_VERSION = 1

__all__ = [
    "COMMAND_REJECTED",
    "COMMAND_REJECTED_SCHEMA_VERSION",
    "StoredRejection",
    "is_marker",
    "is_rejection_stream",
    "legacy_rejection_stream",
    "rejection_of",
    "rejection_stream",
]


def rejection_stream(aggregate_id: str, command_id: str) -> str:
    """Where the previous version recorded one rejected command (still read, never written)."""
    # Ids are free-form: "/" (and "%", the escape) in the id are escaped, or aggregate
    # "a/b" with command "c" and aggregate "a" with command "b/c" would share one stream.
    escaped = aggregate_id.replace("%", "%25").replace("/", "%2F")
    return f"{REJECTIONS_PREFIX}{escaped}/{command_id}"


def legacy_rejection_stream(aggregate_id: str) -> str:
    """Where records were kept before that, all of an order's in one stream."""
    return f"{REJECTIONS_PREFIX}{aggregate_id}"


def is_rejection_stream(stream_id: str) -> bool:
    return stream_id.startswith(REJECTIONS_PREFIX)


@dataclass(frozen=True, slots=True)
class StoredRejection:
    command_id: str
    rule: str
    reason: str
    version: int
    """The aggregate version the command was rejected at (what the outcome reported)."""
    event_id: uuid.UUID

    def as_data(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "rule": self.rule,
            "reason": self.reason,
            AGGREGATE_VERSION: self.version,
        }


def rejection_of(events: Iterable[RecordedEvent], command_id: str) -> StoredRejection | None:
    """The rejection of `command_id` among `events` (a marker in an aggregate stream, or a
    legacy record, whose data named the version `order_version`)."""
    for event in events:
        if event.type == COMMAND_REJECTED and event.data.get("command_id") == command_id:
            version = event.data.get(AGGREGATE_VERSION, event.data.get("order_version", 0))
            return StoredRejection(
                command_id=command_id,
                rule=str(event.data["rule"]),
                reason=str(event.data["reason"]),
                version=int(version),
                event_id=event.event_id,
            )
    return None
