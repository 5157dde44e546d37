"""Dead letters for operators: list the dead-letter queues, show, re-drive and purge them.

Naming: conveyor's dead-letter queues are `<work queue>.dlq` (messaging/topology.py); any
other queue is refused, so a typo cannot re-drive or purge a work queue.

Re-drive is exactly-once, even when interrupted (Ctrl-C, SIGKILL, a dropped connection).
It runs on a channel in AMQP transaction mode (`tx.select`; tx and publisher confirms are
exclusive on a channel). For each batch it takes up to `batch_size` messages from the DLQ
(a consumer with prefetch = the batch, cancelled once the batch is in), publishes a copy of
each to its original queue and acks the original — both held by the broker until
`tx.commit`. Before the commit it passively declares every destination on the same channel:
a destination deleted meanwhile closes the channel, which discards the transaction. So:

* interrupted before the commit: the broker discards the copies and, when the channel
  closes, returns the originals to the DLQ — nothing moved, nothing duplicated;
* interrupted after the commit frame reached the broker: the broker's channel process
  handles tx.commit as one step (routes the copies, settles the originals) whether or not
  the client is still there — all moved.

Verified on RabbitMQ 3.10.8 with quorum queues (tests/integration/test_dlq.py: an
interruption right before the commit, a rolled-back batch, and a redrive subprocess
SIGKILLed three times mid-way). Not covered: a broker node crash in the middle of a commit
(RabbitMQ transactions are not atomic across queues), and a destination that refuses a
copy (a max-length policy with reject-publish) or disappears between the passive declare
and the commit. The broker drops an unroutable copy silently, and in tx mode aiormq does
not surface basic.return — hence the passive declares right before each commit.

A message that is examined but not moved (it does not match --error-type, or --limit is
reached within the batch) is re-appended at the tail of the DLQ in the same transaction:
exactly-once too, but the DLQ's order changes. A re-drive examines at most the messages
that were in the DLQ when it started, so re-appended ones are not examined twice.

The copy keeps body, properties and headers (`x-conveyor-*`, `x-death`), drops the broker's
delivery counters, moves a `user_id` into a header (the broker refuses another user's
user_id) and carries `x-conveyor-dead-lettered-at` — for the broker's own dead letters the
time of their x-death record. That header is what tells the worker (messaging/failures.py
`was_dead_lettered`) that the message was re-driven: its retry budget starts again.

Peeking (show, list) never consumes: basic.get without ack, then one
`basic.nack(multiple, requeue)`. On RabbitMQ 3.10 quorum queues a returned message goes to
the back of the queue, so peeking rotates the DLQ: `show` then shows the next messages, and
`list` takes the oldest among the messages it samples, not the head's age. Each peek is a
return, which quorum queues count:

* RabbitMQ 3.x: no delivery limit unless one is set; our DLQs set none — peeking is free
  (messages then show an `x-delivery-count`). Note that `x-delivery-limit=-1` on 3.10
  drops a message at its first return: never declare that on 3.x.
* RabbitMQ 4.0-4.2: quorum queues have a default delivery limit of 20 and every return
  counts: a DLQ message peeked ~20 times is DROPPED (our DLQs have no dead-letter target).
* RabbitMQ 4.3+: the limit counts failed deliveries only; `basic.nack(requeue)` is not
  one (`basic.reject` is) — this module's peek is free again, the console's "Get
  messages" and a consumer that just closes its channel may not be.

Changing the DLQ's declared arguments would break existing deployments (redeclaring with
other arguments fails with PRECONDITION_FAILED), so on 4.0-4.2 `show`/`list` warn when a
DLQ has no explicit delivery limit; the fix is a policy, which applies to existing queues:
`rabbitmqctl set_policy --apply-to quorum_queues dlq-no-limit '\\.dlq$'
'{"delivery-limit": -1}'` (4.x only; -1 = unlimited there).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from conveyor.observability.logs import escape_controls
from conveyor.operations.management import ManagementApi, ManagementApiError
from conveyor.settings import Settings
from conveyor.tls import amqp_ssl_context
from messaging import failures
from messaging.cluster import connect_any

DLQ_SUFFIX = ".dlq"
DEFAULT_BATCH_SIZE = 500
BATCH_IDLE_SECONDS = 2.0
"""How long a batch waits for the next message before it takes the DLQ as drained (another
consumer took the rest)."""
_BROKER_COUNTERS = ("x-delivery-count", "x-acquired-count")


class DeadLetterError(Exception):
    """An operator error (unknown or non-DLQ queue, missing destination): one line."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of a DLQ, as `show` presents it."""

    message_id: str | None
    error_type: str
    error_message: str | None
    failure_class: str | None
    attempts: int | None
    first_failure_at: str | None
    last_failure_at: str | None
    dead_lettered_at: str | None
    original_queue: str
    delivery_count: int | None
    """Returns the DLQ's quorum queue has counted (peeks included)."""
    content_type: str | None
    body: bytes

    def as_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "message_id": self.message_id,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "failure_class": self.failure_class,
            "attempts": self.attempts,
            "first_failure_at": self.first_failure_at,
            "last_failure_at": self.last_failure_at,
            "dead_lettered_at": self.dead_lettered_at,
            "original_queue": self.original_queue,
            "delivery_count": self.delivery_count,
            "content_type": self.content_type,
        }
        try:
            result["body"] = self.body.decode()
        except UnicodeDecodeError:
            result["body_base64"] = base64.b64encode(self.body).decode()
        return result


@dataclass(frozen=True, slots=True)
class DeadLetterQueueSummary:
    name: str
    messages: int
    oldest_dead_lettered_at: datetime | None
    """The earliest dead-lettering time among the `sampled` messages."""
    error_types: list[tuple[str, int]]
    """Most common first, counted over the `sampled` messages at the head of the queue."""
    sampled: int

    def oldest_age(self, now: datetime | None = None) -> timedelta | None:
        if self.oldest_dead_lettered_at is None:
            return None
        return (now or datetime.now(UTC)) - self.oldest_dead_lettered_at

    def as_json(self) -> dict[str, Any]:
        age = self.oldest_age()
        return {
            "queue": self.name,
            "messages": self.messages,
            "oldest_dead_lettered_at": (
                self.oldest_dead_lettered_at.isoformat() if self.oldest_dead_lettered_at else None
            ),
            "oldest_age_seconds": round(age.total_seconds(), 3) if age is not None else None,
            "error_types": dict(self.error_types),
            "sampled": self.sampled,
        }


@dataclass(slots=True)
class RedriveResult:
    queue: str
    examined: int = 0
    moved: int = 0
    kept: int = 0
    """Examined but left in the DLQ (re-appended at its tail)."""
    destinations: Counter[str] = field(default_factory=Counter)


RedriveProgress = Callable[[RedriveResult, int], None]
"""Called after each committed batch with the result so far and the messages to examine."""


# --- reading a dead letter -------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _deaths(headers: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return []
    return [death for death in deaths if isinstance(death, Mapping)]


def _death_times(headers: Mapping[str, Any]) -> list[datetime]:
    times = []
    for death in _deaths(headers):
        moment = death.get("time")
        if isinstance(moment, datetime):
            times.append(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return times


def _parse_time(value: Any) -> datetime | None:
    text = _text(value)
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def error_type_of(headers: Mapping[str, Any]) -> str:
    """Ours (x-conveyor-error-type) on a dead letter we published; the broker's reason
    (delivery_limit, rejected, maxlen) on one the broker dead-lettered itself.

    A retry copy carries the error type of the attempt that sent it round the ladder; if the
    broker later dead-letters it (its delivery limit, or a reject when the worker could not
    settle it), that header is stale: the broker's latest reason is what put it here."""
    ours = _text(headers.get(failures.ERROR_TYPE))
    if ours and failures.DEAD_LETTERED_AT in headers:
        return ours
    reason = _text(headers.get("x-last-death-reason"))
    if not reason and (deaths := _deaths(headers)):
        reason = _text(deaths[0].get("reason"))  # the most recent death comes first
    if not reason:
        reason = _text(headers.get("x-first-death-reason"))
    return reason or ours or "unknown"


def dead_lettered_at(message: AbstractIncomingMessage) -> datetime | None:
    headers = message.headers or {}
    ours = _parse_time(headers.get(failures.DEAD_LETTERED_AT))
    if ours is not None:
        return ours
    if times := _death_times(headers):
        return max(times)
    stamp = message.timestamp
    if isinstance(stamp, datetime):
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return None


def original_queue_of(headers: Mapping[str, Any], dead_letter_queue: str) -> str:
    """The queue a dead letter goes back to: always the one its DLQ belongs to. A header
    naming another queue is anybody's claim (a sender can set it), so it is not followed."""
    return dead_letter_queue.removesuffix(DLQ_SUFFIX)


def describe(message: AbstractIncomingMessage, dead_letter_queue: str) -> DeadLetter:
    headers = message.headers or {}
    death_times = _death_times(headers)
    attempts = headers.get(failures.ATTEMPTS)
    delivery_count = headers.get("x-delivery-count")
    dead_at = dead_lettered_at(message)
    return DeadLetter(
        message_id=failures.original_message_id(message),
        error_type=error_type_of(headers),
        error_message=_text(headers.get(failures.ERROR_MESSAGE)),
        failure_class=_text(headers.get(failures.FAILURE_CLASS)),
        attempts=attempts if isinstance(attempts, int) else None,
        first_failure_at=_text(headers.get(failures.FIRST_FAILURE_AT))
        or (min(death_times).isoformat() if death_times else None),
        last_failure_at=_text(headers.get(failures.LAST_FAILURE_AT))
        or (max(death_times).isoformat() if death_times else None),
        dead_lettered_at=dead_at.isoformat() if dead_at else None,
        original_queue=original_queue_of(headers, dead_letter_queue),
        delivery_count=delivery_count if isinstance(delivery_count, int) else None,
        content_type=message.content_type,
        body=message.body,
    )


# --- connections and queue names -------------------------------------------------------


async def connect(settings: Settings, purpose: str) -> aio_pika.abc.AbstractConnection:
    """A plain (not robust) connection: a transaction must never be replayed on a new one."""
    return await connect_any(
        settings.amqp_url,
        ssl_context=amqp_ssl_context(settings),
        timeout=settings.amqp_connect_timeout,
        client_properties={"connection_name": f"conveyor dlq {purpose}"},
    )


async def check_dead_letter_queue(api: ManagementApi, name: str) -> dict[str, Any]:
    """The DLQ's management record; refuses a queue that is not a DLQ or does not exist."""
    if not name.endswith(DLQ_SUFFIX):
        hint = ""
        if await api.queue(name + DLQ_SUFFIX) is not None:
            hint = f" (did you mean {name + DLQ_SUFFIX!r}?)"
        raise DeadLetterError(
            f"{name!r} is not a dead-letter queue: conveyor's end in {DLQ_SUFFIX!r}{hint}"
        )
    queue = await api.queue(name)
    if queue is None:
        raise DeadLetterError(f"dead-letter queue {name!r} does not exist in vhost {api.vhost!r}")
    return queue


def peek_warning(server_version: str, queue: Mapping[str, Any]) -> str | None:
    """On RabbitMQ 4.0-4.2 every peek counts towards a quorum queue's delivery limit (20 by
    default): say so when the DLQ has no explicit limit (see the module docstring)."""
    try:
        major, minor = (int(part) for part in server_version.split(".")[:2])
    except ValueError:
        return None
    if major != 4 or minor >= 3 or queue.get("type") != "quorum":
        return None
    policy = queue.get("effective_policy_definition") or {}
    if "x-delivery-limit" in (queue.get("arguments") or {}) or "delivery-limit" in policy:
        return None
    return (
        f"warning: RabbitMQ {server_version} counts every peek of {queue.get('name')!r} "
        "towards the default quorum-queue delivery limit (20) and then drops the message; "
        "set a policy with delivery-limit -1 on the DLQs"
    )


def server_version(connection: aio_pika.abc.AbstractConnection) -> str:
    properties = getattr(getattr(connection, "transport", None), "connection", None)
    version = getattr(properties, "server_properties", {}).get("version", "")
    return _text(version) or ""


# --- peeking ---------------------------------------------------------------------------


async def _message_count(channel: AbstractChannel, name: str) -> tuple[AbstractQueue, int]:
    queue = await channel.declare_queue(name, passive=True)
    return queue, queue.declaration_result.message_count or 0


async def peek(channel: AbstractChannel, name: str, limit: int) -> list[AbstractIncomingMessage]:
    """Up to `limit` messages from the head of the queue, left in it: basic.get without
    ack, then one nack(multiple, requeue) — which, unlike a reject or a closed channel, does
    not count as a failed delivery on RabbitMQ 4.3+."""
    queue = await channel.get_queue(name, ensure=False)
    messages: list[AbstractIncomingMessage] = []
    try:
        while len(messages) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            messages.append(message)
    finally:
        if messages and not channel.is_closed:
            await messages[-1].nack(multiple=True, requeue=True)
    return messages


@dataclass(frozen=True, slots=True)
class ShowResult:
    queue: str
    messages: int
    dead_letters: list[DeadLetter]
    warning: str | None


async def show(settings: Settings, api: ManagementApi, name: str, limit: int) -> ShowResult:
    record = await check_dead_letter_queue(api, name)
    connection = await connect(settings, "show")
    async with connection:
        channel = await connection.channel()
        _, count = await _message_count(channel, name)
        messages = await peek(channel, name, limit)
        return ShowResult(
            queue=name,
            messages=count,
            dead_letters=[describe(message, name) for message in messages],
            warning=peek_warning(server_version(connection), record),
        )


async def list_dead_letter_queues(
    settings: Settings, api: ManagementApi, sample: int = 100
) -> tuple[list[DeadLetterQueueSummary], list[str]]:
    """Every `*.dlq` of the vhost: its exact depth (passive declare: the management API's
    statistics lag), and the oldest dead letter and the error types among its first
    `sample` messages — over all of them when it holds no more than that."""
    try:
        queues = await api.queues()
    except ManagementApiError as exc:
        if "HTTP 404" in str(exc):
            raise DeadLetterError(f"vhost {api.vhost!r} does not exist") from None
        raise
    records = sorted(
        (queue for queue in queues if queue["name"].endswith(DLQ_SUFFIX)),
        key=lambda queue: queue["name"],
    )
    summaries: list[DeadLetterQueueSummary] = []
    warnings: list[str] = []
    if not records:
        return summaries, warnings
    connection = await connect(settings, "list")
    async with connection:
        version = server_version(connection)
        for record in records:
            channel = await connection.channel()
            try:
                _, count = await _message_count(channel, record["name"])
                messages = await peek(channel, record["name"], sample) if count else []
            except aio_pika.exceptions.ChannelNotFoundEntity:
                continue  # deleted since the management API listed it
            finally:
                if not channel.is_closed:
                    await channel.close()
            types = Counter(error_type_of(message.headers or {}) for message in messages)
            summaries.append(
                DeadLetterQueueSummary(
                    name=record["name"],
                    messages=count,
                    oldest_dead_lettered_at=min(
                        (moment for m in messages if (moment := dead_lettered_at(m))),
                        default=None,
                    ),
                    error_types=types.most_common(),
                    sampled=len(messages),
                )
            )
            if count and (warning := peek_warning(version, record)):
                warnings.append(warning)
    return summaries, warnings


# --- re-drive --------------------------------------------------------------------------


def _copy(
    message: AbstractIncomingMessage, *, redriven: bool, own_user: str | None = None
) -> aio_pika.Message:
    headers: dict[str, Any] = dict(message.headers or {})
    for name in _BROKER_COUNTERS:
        headers.pop(name, None)
    if redriven and failures.DEAD_LETTERED_AT not in headers:
        # A broker dead letter (x-death only): mark it, so the worker's fresh budget does not
        # depend on the broker keeping a republished x-death header (3.13+ ignores it).
        moment = dead_lettered_at(message) or datetime.now(UTC)
        headers[failures.DEAD_LETTERED_AT] = moment.isoformat()
    if message.user_id:
        headers.setdefault(failures.ORIGINAL_USER_ID, message.user_id)
    # The broker accepts only our own login as user_id. Kept when it is ours, a re-driven
    # gateway event (same account) stays trusted by the projections; any other is dropped.
    user_id = message.user_id if message.user_id == own_user else None
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        expiration=message.expiration,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
        user_id=user_id,
    )


async def _take_batch(
    channel: AbstractChannel, queue: AbstractQueue, size: int
) -> list[AbstractIncomingMessage]:
    """Up to `size` deliveries: a consumer with prefetch = size, cancelled once they are in
    (its unacked deliveries stay with the channel, for the transaction to settle)."""
    await channel.set_qos(prefetch_count=size)
    received: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    consumer_tag = await queue.consume(received.put, no_ack=False)
    batch: list[AbstractIncomingMessage] = []
    try:
        while len(batch) < size:
            batch.append(await asyncio.wait_for(received.get(), BATCH_IDLE_SECONDS))
    except TimeoutError:
        pass
    finally:
        await queue.cancel(consumer_tag)
    await asyncio.sleep(0)  # deliveries that arrived before cancel-ok are ours too
    while not received.empty() and len(batch) < size:
        batch.append(received.get_nowait())
    return batch


async def redrive(
    settings: Settings,
    api: ManagementApi,
    name: str,
    *,
    limit: int | None = None,
    error_type: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: RedriveProgress | None = None,
) -> RedriveResult:
    """Move dead letters back to their original queue, exactly once (module docstring)."""
    await check_dead_letter_queue(api, name)
    result = RedriveResult(queue=name)
    connection = await connect(settings, "redrive")
    own_user = settings.amqp_user()
    async with connection:
        channel = await connection.channel(publisher_confirms=False)
        queue, to_examine = await _message_count(channel, name)
        transaction = channel.transaction()
        await transaction.select()
        while result.examined < to_examine and (limit is None or result.moved < limit):
            want = min(batch_size, to_examine - result.examined)
            if error_type is None and limit is not None:
                want = min(want, limit - result.moved)  # then nothing is re-appended
            batch = await _take_batch(channel, queue, want)
            if not batch:
                break  # another consumer emptied the DLQ
            moved: Counter[str] = Counter()
            for message in batch:
                headers = message.headers or {}
                wanted = error_type is None or error_type_of(headers) == error_type
                if wanted and (limit is None or result.moved + moved.total() < limit):
                    destination = original_queue_of(headers, name)
                    moved[destination] += 1
                    copy = _copy(message, redriven=True, own_user=own_user)
                else:
                    destination = name  # stays: re-appended at the tail
                    copy = _copy(message, redriven=False, own_user=own_user)
                await channel.default_exchange.publish(copy, routing_key=destination)
                await message.ack()
            await _check_destinations(channel, moved, name, result.moved)
            await transaction.commit()
            result.examined += len(batch)
            result.moved += moved.total()
            result.kept += len(batch) - moved.total()
            result.destinations.update(moved)
            if progress is not None:
                progress(result, to_examine)
    return result


async def _check_destinations(
    channel: AbstractChannel, names: Iterable[str], dlq: str, moved_before: int
) -> None:
    """A passive declare of a missing queue closes the channel, which discards the
    transaction: the batch stays in the DLQ instead of being routed nowhere."""
    for destination in sorted(names):
        try:
            await channel.declare_queue(destination, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            raise DeadLetterError(
                f"cannot re-drive to {destination!r}: the queue does not exist (start the "
                f"workers once to declare it); {moved_before} message(s) moved before this "
                f"batch, which stays in {dlq!r}"
            ) from None


# --- purge -----------------------------------------------------------------------------


async def message_count(settings: Settings, api: ManagementApi, name: str) -> int:
    await check_dead_letter_queue(api, name)
    connection = await connect(settings, "purge")
    async with connection:
        _, count = await _message_count(await connection.channel(), name)
        return count


async def purge(settings: Settings, api: ManagementApi, name: str) -> int:
    """Delete the DLQ's ready messages; returns how many (messages being peeked at this
    moment are not ready and stay)."""
    await check_dead_letter_queue(api, name)
    connection = await connect(settings, "purge")
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(name, ensure=False)
        purged = await queue.purge()
        return (purged.message_count or 0) if purged is not None else 0


def body_preview(body: bytes, width: int = 2000) -> str:
    """The body as text for a terminal: JSON compacted, other text with its control
    characters escaped (no escape sequence reaches the terminal), binary as hex."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return body[: width // 2].hex() + ("…" if len(body) > width // 2 else "")
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text), ensure_ascii=False)
    text = escape_controls(text)
    return text if len(text) <= width else text[:width] + "…"
