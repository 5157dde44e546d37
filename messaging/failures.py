"""Where a message goes when it cannot be processed: a delay tier of the retry ladder, or
the dead-letter queue, with headers that explain it.

A copy is published (publisher confirms, persistent) and only then is the original acked, so
a crash in between duplicates a message rather than losing it; consumers are idempotent.

Attempts are counted in our own header: RabbitMQ 3.13+ ignores `x-death` on republished
messages and quorum-queue delivery counts differ between 3.x and 4.x. A copy in the DLQ
carries `x-conveyor-dead-lettered-at`; a message arriving on the work queue with that header
(or with the broker's x-death record of a reject or delivery limit on this queue) was moved
back by an operator (console "Move messages" or the CLI) and starts a fresh retry budget.
Retry copies never carry either: they are published without the broker's headers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import RabbitBroker

from conveyor.observability.metrics import MESSAGES_DEAD_LETTERED, MESSAGES_RETRIED, LabelCache
from conveyor.store_failures import StoreRefusedWrite, StoreUnavailable
from messaging.topology import WorkQueue

logger = logging.getLogger(__name__)

ATTEMPTS = "x-conveyor-attempts"
FIRST_FAILURE_AT = "x-conveyor-first-failure-at"
LAST_FAILURE_AT = "x-conveyor-last-failure-at"
ERROR_TYPE = "x-conveyor-error-type"
ERROR_MESSAGE = "x-conveyor-error-message"
FAILURE_CLASS = "x-conveyor-failure-class"
ORIGINAL_QUEUE = "x-conveyor-original-queue"
DEAD_LETTERED_AT = "x-conveyor-dead-lettered-at"
ORIGINAL_USER_ID = "x-conveyor-original-user-id"
ORIGINAL_APP_ID = "x-conveyor-original-app-id"
ORIGINAL_SIZE = "x-conveyor-original-size"
"""On a dead letter whose body was cut to the size limit: the body's size before."""
ORIGINAL_MESSAGE_ID = "x-conveyor-original-message-id"
"""On a copy we publish: the message_id of the message it copies. Every copy gets an id of
its own, because aiormq matches a `basic.return` to its publish by message_id: two
publishes with one id in flight on one channel (three projections routing copies of one
event at once) can have their returns swapped, acking an original whose copy was lost."""
HANDED_BACK = "x-conveyor-handed-back"
"""On a copy put back on its work queue during a store outage (`FailureRouter.hand_back`):
an attempt may have reached the store before it went away."""
NO_MESSAGE_ID = "x-conveyor-no-message-id"
"""On a copy of a message that had no message_id: the publishing client invents one, which
must not become the command id of a command that never had one."""

# Headers the broker adds when it dead-letters or redelivers: stale on a copy we publish.
_BROKER_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
)
_MAX_ERROR_MESSAGE = 2000


STORE_AWAY: tuple[type[BaseException], ...] = (
    StoreUnavailable,
    ConnectionError,
    TimeoutError,
)
"""Failures of the store, not of the message: they pause consuming (messaging/
store_outage.py) instead of spending the message's attempts."""

PERMANENT: tuple[type[BaseException], ...] = (StoreRefusedWrite,)
"""The store refused this message's write for what it is: no retry can change that."""


def store_is_away(failure: BaseException) -> bool:
    return isinstance(failure, STORE_AWAY)


def is_permanent(failure: BaseException) -> bool:
    return isinstance(failure, PERMANENT)


def _now() -> datetime:
    return datetime.now(UTC)


def was_dead_lettered(headers: Mapping[str, Any], work_queue: str) -> bool:
    """Whether this delivery came back from a dead-letter queue: our own dead letters carry
    DEAD_LETTERED_AT; the broker's (a reject, or the delivery limit) an x-death entry."""
    if DEAD_LETTERED_AT in headers:
        return True
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return False
    for death in deaths:
        if not isinstance(death, Mapping):
            continue
        queue, reason = death.get("queue"), death.get("reason")
        queue = queue.decode() if isinstance(queue, bytes) else queue
        reason = reason.decode() if isinstance(reason, bytes) else reason
        if queue == work_queue and reason in ("rejected", "delivery_limit"):
            return True
    return False


def original_message_id(message: AbstractIncomingMessage) -> str | None:
    """The id the message was first published with: a copy carries it in a header."""
    headers = message.headers or {}
    if headers.get(NO_MESSAGE_ID):
        return None
    original = headers.get(ORIGINAL_MESSAGE_ID)
    if isinstance(original, bytes):
        original = original.decode(errors="replace")
    if isinstance(original, str) and original:
        return original
    return message.message_id


def previous_attempts(headers: Mapping[str, Any] | None, work_queue: str = "") -> int:
    """Failed attempts recorded on the message; 0 for a fresh or re-driven one."""
    headers = headers or {}
    if was_dead_lettered(headers, work_queue):
        return 0
    try:
        return max(int(headers.get(ATTEMPTS, 0)), 0)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True, slots=True)
class FailureRoute:
    destination: str
    attempts: int
    dead_lettered: bool


class FailureRouter:
    def __init__(
        self,
        broker: RabbitBroker,
        queue: WorkQueue,
        *,
        max_attempts: int,
        publish_timeout: float | None = None,
        clock: Callable[[], datetime] = _now,
        user_id: str | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        self._broker = broker
        self._user_id = user_id
        self._max_body_bytes = max_body_bytes
        self._queue = queue
        self._max_attempts = max_attempts
        self._publish_timeout = publish_timeout
        self._clock = clock
        self._retried = LabelCache(MESSAGES_RETRIED, queue.name)
        self._dead_lettered = LabelCache(MESSAGES_DEAD_LETTERED, queue.name)

    async def dead_letter(
        self, message: AbstractIncomingMessage, error_type: str, error_message: str
    ) -> FailureRoute:
        """Invalid input: straight to the dead-letter queue, no retries."""
        return await self.route(
            message, error_type=error_type, error_message=error_message, retryable=False
        )

    async def retry_later(
        self, message: AbstractIncomingMessage, failure: BaseException
    ) -> FailureRoute:
        """A transient failure: the next retry tier, or the DLQ when attempts run out."""
        return await self.route(
            message,
            error_type=type(failure).__name__,
            error_message=str(failure) or repr(failure),
            retryable=True,
        )

    async def permanent_failure(
        self, message: AbstractIncomingMessage, failure: BaseException
    ) -> FailureRoute:
        """The store refused this message for what it is: the DLQ at once, with the reason."""
        return await self.route(
            message,
            error_type=type(failure).__name__,
            error_message=str(failure) or repr(failure),
            retryable=False,
            failure_class="permanent",
        )

    async def hand_back(self, message: AbstractIncomingMessage) -> None:
        """Put an unprocessed delivery back on its work queue as a fresh message, its
        attempts unspent: for a delivery the broker would otherwise dead-letter on its
        delivery limit after being handed back during store outages. Raises if the copy
        was not confirmed."""
        headers: dict[str, Any] = dict(message.headers or {})
        if was_dead_lettered(headers, self._queue.name):  # keep its fresh retry budget
            headers.setdefault(DEAD_LETTERED_AT, self._clock().isoformat())
        for name in _BROKER_HEADERS:
            headers.pop(name, None)
        headers[HANDED_BACK] = True
        await self._publish(
            message,
            self._queue.name,
            headers,
            redriven=was_dead_lettered(message.headers or {}, self._queue.name),
        )

    async def route(
        self,
        message: AbstractIncomingMessage,
        *,
        error_type: str,
        error_message: str,
        retryable: bool,
        failure_class: str = "",
    ) -> FailureRoute:
        """Publish a copy to the next retry tier or, when not retryable or out of attempts,
        to the dead-letter queue. Raises if the copy was not confirmed."""
        headers: dict[str, Any] = dict(message.headers or {})
        redriven = was_dead_lettered(headers, self._queue.name)
        attempts = previous_attempts(headers, self._queue.name) + 1
        now = self._clock().isoformat()
        for name in (*_BROKER_HEADERS, DEAD_LETTERED_AT):
            headers.pop(name, None)
        if redriven or FIRST_FAILURE_AT not in headers:
            headers[FIRST_FAILURE_AT] = now
        headers.update(
            {
                ATTEMPTS: attempts,
                LAST_FAILURE_AT: now,
                ERROR_TYPE: error_type,
                ERROR_MESSAGE: error_message[:_MAX_ERROR_MESSAGE],
                FAILURE_CLASS: failure_class or ("transient" if retryable else "invalid"),
                ORIGINAL_QUEUE: self._queue.name,
            }
        )
        if retryable and attempts < self._max_attempts:
            route = FailureRoute(self._queue.retry_queue_for(attempts), attempts, False)
        else:
            headers[DEAD_LETTERED_AT] = now
            route = FailureRoute(self._queue.dead_letter_queue, attempts, True)
        await self._publish(message, route.destination, headers, redriven=redriven)
        (self._dead_lettered if route.dead_lettered else self._retried)(error_type).inc()
        return route

    async def _publish(
        self,
        message: AbstractIncomingMessage,
        destination: str,
        headers: dict[str, Any],
        *,
        redriven: bool = False,
    ) -> None:
        original_id = original_message_id(message)
        if original_id is None:
            headers[NO_MESSAGE_ID] = True
        else:
            headers[ORIGINAL_MESSAGE_ID] = original_id
        if ATTEMPTS not in (message.headers or {}) or redriven:
            # A message from a sender, not a copy of ours: what it claims about its origin is
            # not evidence. Only the broker-validated properties are recorded.
            for name in (ORIGINAL_USER_ID, ORIGINAL_APP_ID):
                headers.pop(name, None)
        if message.user_id:
            # Republishing with another user's user_id is refused by the broker.
            headers[ORIGINAL_USER_ID] = message.user_id
        if message.app_id:  # the publisher stamps its own app_id on the copy
            headers.setdefault(ORIGINAL_APP_ID, message.app_id)
        body = message.body
        if self._max_body_bytes is not None and len(body) > self._max_body_bytes:
            # Too large to be valid anyway: keep enough to recognise it, not the whole cost.
            headers[ORIGINAL_SIZE] = len(body)
            body = body[: self._max_body_bytes]
        # aio-pika waits for a blocked connection *before* its own publish timeout starts:
        # only a deadline around the whole call bounds it.
        async with asyncio.timeout(self._publish_timeout):
            await self._broker.publish(
                body,
                queue=destination,
                headers=headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                correlation_id=message.correlation_id,
                message_id=uuid.uuid4().hex,  # unique per copy: see ORIGINAL_MESSAGE_ID
                reply_to=message.reply_to,
                message_type=message.type,
                timestamp=message.timestamp,
                priority=message.priority,
                # Our own user_id survives the copy (the broker accepts only our login): a retry
                # of the gateway's event stays trusted when the gateway shares our account.
                user_id=message.user_id if message.user_id == self._user_id else None,
                persist=True,
                mandatory=True,
                timeout=self._publish_timeout,
            )
