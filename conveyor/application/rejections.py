"""Durable rejections: a business rejection is recorded before its outcome is published.

A rejection used to leave no trace in the store, so a command redelivered after its
"rejected" outcome was published (worker killed before the ack) was decided again against
newer state and could be applied. Now the handler appends `CommandRejected` to the order's
rejection stream first; a command seen again is answered from that record, so its outcome
is final — exactly like an acceptance, which the order stream itself records.

The stream is `rejections-<order_id>/<command_id>` ("/" in the order id escaped),
deliberately *not* under `order-`: order ids are free-form, so `order-rejections-x` would
be the stream of the order "rejections-x"; and everything that follows order streams
(fold, history, customers, status, projections) selects them by the `order-` prefix.
`CommandRejected` has no integration contract: the gateway never publishes it. The record
is an application concern (the domain decides; remembering the verdict is idempotency
bookkeeping), so it lives here, not in domain/.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from conveyor.eventstore.port import RecordedEvent

REJECTIONS_PREFIX = "rejections-"
COMMAND_REJECTED = "CommandRejected"
COMMAND_REJECTED_SCHEMA_VERSION = 1


def rejection_stream(order_id: str, command_id: str) -> str:
    """One stream per rejected command: finding a command's record is one read of a stream
    that holds at most that record, never a scan whose cost grows with every rejection of
    the order (a flood of rejected commands used to make each later command slower)."""
    # Ids are free-form: "/" (and "%", the escape) in the order id are escaped, or order
    # "a/b" with command "c" and order "a" with command "b/c" would share one stream.
    escaped = order_id.replace("%", "%25").replace("/", "%2F")
    return f"{REJECTIONS_PREFIX}{escaped}/{command_id}"


def legacy_rejection_stream(order_id: str) -> str:
    """Where records were kept before, all of an order's in one stream: still consulted for
    a delivery that may have been handled before, so those rejections stay final."""
    return f"{REJECTIONS_PREFIX}{order_id}"


def is_rejection_stream(stream_id: str) -> bool:
    return stream_id.startswith(REJECTIONS_PREFIX)


@dataclass(frozen=True, slots=True)
class StoredRejection:
    command_id: str
    rule: str
    reason: str
    version: int
    """The order's version the command was rejected at (what the outcome reported)."""
    event_id: uuid.UUID

    def as_data(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "rule": self.rule,
            "reason": self.reason,
            "order_version": self.version,
        }


def rejection_of(events: Iterable[RecordedEvent], command_id: str) -> StoredRejection | None:
    for event in events:
        if event.type == COMMAND_REJECTED and event.data.get("command_id") == command_id:
            return StoredRejection(
                command_id=command_id,
                rule=str(event.data["rule"]),
                reason=str(event.data["reason"]),
                version=int(event.data.get("order_version", 0)),
                event_id=event.event_id,
            )
    return None
