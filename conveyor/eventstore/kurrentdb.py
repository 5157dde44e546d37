"""The KurrentDB adapter of the event store port.

KurrentDB numbers stream events from 0 and we number them from 1, so an event's `version`
is its stream position + 1 and an expected version N is KurrentDB's "current version" N-1.
The global-log `position` is KurrentDB's commit position: every event of a multi-event
append gets its own, and they only grow. Positions are byte offsets in the log, not event
counts: never subtract two of them to count events.

Every read goes through `_read_whole`, which wraps the client's lazy reads in the same
retry-and-reconnect decorators as the client's own `get_stream`, and which refuses a read
cut short because a concurrent call made the shared client reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kurrentdbclient import AsyncKurrentDBClient, StreamState
from kurrentdbclient import NewEvent as KurrentNewEvent
from kurrentdbclient import RecordedEvent as KurrentRecordedEvent
from kurrentdbclient.asyncio_client import autoreconnect, retrygrpc
from kurrentdbclient.connection_spec import NODE_PREFERENCE_LEADER, ConnectionSpec
from kurrentdbclient.exceptions import (
    AbortedByServerError,
    AccessDeniedError,
    DeadlineExceededError,
    DiscoveryFailedError,
    GrpcError,
    InvalidCommitPositionError,
    KurrentDBClientError,
    NodeIsNotLeaderError,
    NotFoundError,
    ProgrammingError,
    ServiceUnavailableError,
    StreamIsDeletedError,
    UnauthenticatedError,
    UnknownError,
    WrongCurrentVersionError,
)

from conveyor.eventstore.port import (
    NO_STREAM,
    AppendResult,
    ConcurrencyError,
    EventStoreUnavailable,
    NewEvent,
    RecordedEvent,
    Snapshot,
    UnreadableSnapshot,
)
from conveyor.eventstore.serialization import dumps, format_time, parse_time, redact_url, to_utc

# Failures that say "the store is not answering right now", as opposed to "you asked for
# something wrong": callers retry these later. GrpcError covers UNAVAILABLE, gRPC deadlines,
# cancellations and internal errors; DeadlineExceededError adds the server-side append
# timeout; a leader change and failed cluster discovery are transient too. So are the
# server's UNKNOWN answers (UnknownError: "No leader info available" while a cluster has no
# leader yet, or a read that failed inside the server) and ABORTED ones (a write that timed
# out), which the library neither retries nor counts as GrpcErrors.
_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    GrpcError,
    DeadlineExceededError,
    DiscoveryFailedError,
    NodeIsNotLeaderError,
    UnknownError,
    AbortedByServerError,
)

# The server refuses this user: a missing role or $all ACL, or a wrong password. Not
# transient in itself, but it ends when an operator fixes the account, so callers treat it
# like an outage (the gateway waits, commands go round the retry ladder) with a message that
# says what to fix.
_ACCESS_ERRORS: tuple[type[Exception], ...] = (AccessDeniedError, UnauthenticatedError)
_ACCESS_HINT = (
    "conveyor's KurrentDB user must authenticate, read and write the aggregate streams "
    "(order-*), read the rejections-* streams, and (gateway, rebuilds, status) read $all: "
    "see the README, "
    "KurrentDB permissions"
)

_PROBE_STREAM = "conveyor-readiness-probe"

# Marks, in a decoded event's metadata, an event from the global log whose data is not a
# JSON object (another application's bytes): it is passed on with empty data, so that a
# consumer skips it like any foreign event instead of halting on it.
UNDECODABLE_DATA = "undecodable_data"

# Applied by the server to stream names: it drops whole system streams ($stats-…, $$…
# metadata streams, projection output) before they cross the wire. System event types in
# ordinary streams are dropped on our side, because one read can filter on only one of the
# two.
_SYSTEM_STREAMS_FILTER = (r"\$.+", r"snapshot-\$.+")

# Each stream's snapshots live in a stream of their own named as kurrentdbclient's docs
# suggest ("How to implement snapshotting"), `snapshot-$<stream>`, which keeps only its
# latest event ($maxCount 1, set in its metadata when it is first written). The log
# filter above and `_is_system` keep those streams out of every read of the global log.
SNAPSHOT_STREAM_PREFIX = "snapshot-$"
_SNAPSHOT_EVENT_TYPE = "Snapshot"

# Our keys in the KurrentDB metadata JSON; everything else there is the caller's metadata.
_OCCURRED_AT = "occurred_at"
_SCHEMA_VERSION = "schema_version"
# A fresh id per append call, on every event it writes: how an append tells that it wrote
# its events itself rather than finding identical ones (same deterministic ids) already
# written by a racing duplicate, which the server accepts as an idempotent no-op.
_APPEND_ID = "append_id"
_RESERVED_METADATA_KEYS = frozenset({_OCCURRED_AT, _SCHEMA_VERSION, _APPEND_ID, UNDECODABLE_DATA})

# How many events to look at per request when walking the log backwards for its head: the
# tail is usually ours, so one small read nearly always settles it.
_HEAD_SCAN_BATCH = 32
_MIN_READ_BATCH = 64


def _is_system(event: KurrentRecordedEvent) -> bool:
    return (
        event.type.startswith("$")
        or event.stream_name.startswith("$")
        or event.stream_name.startswith(SNAPSHOT_STREAM_PREFIX)
    )


class KurrentDBEventStore:
    """Event store on KurrentDB (or EventStoreDB 23.10 and later, the oldest server that
    kurrentdbclient 1.x supports) through kurrentdbclient's asyncio client.

    `uri` is a `kurrentdb://`, `kurrentdb+discover://`, `esdb://` or `esdb+discover://` URI;
    kurrentdbclient accepts all of them as they are. A cluster is either every node under
    the plain scheme (`kurrentdb://user:pass@n1:2113,n2:2113,n3:2113`) or one DNS name under
    `+discover` (which takes exactly one host); both find the leader by gossip.

    TLS is on by default and always verifies the server: `tlsCaFile=/path/ca.crt` for a
    private CA. The client ignores `tlsVerifyCert=false`, and it refuses TLS without a user
    and password in the URI, so client certificates (`userCertFile=`/`userKeyFile=`) come on
    top of `user:pass@`, never instead. `?tls=false` is only for a local insecure
    development node. Messages show the password masked.

    `timeout` bounds every call (seconds); `probe_timeout` bounds the whole of `open()`
    (cluster discovery included) and `ping()`.
    """

    def __init__(self, uri: str, *, timeout: float = 30.0, probe_timeout: float = 5.0) -> None:
        self._uri = uri
        self._redacted_uri = redact_url(uri)
        try:
            # Pure parsing, no I/O: a bad URI is a configuration error worth failing on at
            # construction rather than at the first open().
            spec = ConnectionSpec(uri)
        except ValueError as exc:
            # The client's messages quote the whole URI, password included.
            raise ValueError(str(exc).replace(uri, self._redacted_uri)) from None
        if spec.options.node_preference != NODE_PREFERENCE_LEADER:
            # The client follows a "not leader" answer to an append only when it prefers
            # the leader, and a follower's reads may lag the log (the gateway would miss
            # an order it is relaying and skip the event).
            raise ValueError(
                f"{self._redacted_uri}: conveyor reads and writes on the leader only; "
                f"remove nodePreference={spec.options.node_preference}"
            )
        self._timeout = timeout
        self._probe_timeout = probe_timeout
        self._kurrent: AsyncKurrentDBClient | None = None

    async def open(self) -> None:
        if self._kurrent is not None:
            return
        client = AsyncKurrentDBClient(self._uri)
        try:
            # connect() only builds a gRPC channel for a single-target URI, and succeeds
            # with no server at all; for a cluster it runs gossip discovery, which retries
            # maxDiscoverAttempts times per host. The probe is what proves the store is
            # there; the deadline keeps the whole of it short.
            async with asyncio.timeout(self._probe_timeout):
                try:
                    await client.connect()
                except (*_UNAVAILABLE_ERRORS, *_ACCESS_ERRORS) as exc:
                    raise self._failure(exc) from exc
                await self._probe(client)
        except TimeoutError as exc:
            await _close_quietly(client)
            raise EventStoreUnavailable(
                f"KurrentDB at {self._redacted_uri} did not answer within {self._probe_timeout:g}s"
            ) from exc
        except BaseException:
            await _close_quietly(client)
            raise
        self._kurrent = client

    async def close(self) -> None:
        client, self._kurrent = self._kurrent, None
        if client is not None:
            await _close_quietly(client)

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self._probe_timeout):
                await self._probe(self._client)
        except TimeoutError as exc:
            raise EventStoreUnavailable(
                f"KurrentDB at {self._redacted_uri} did not answer within {self._probe_timeout:g}s"
            ) from exc

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent]
    ) -> AppendResult:
        if expected_version < NO_STREAM:
            raise ValueError(f"expected_version must be >= {NO_STREAM}, got {expected_version}")
        if stream_id.startswith("$"):
            # read_all never returns system streams, so events written there would vanish.
            raise ValueError(f"stream ids starting with '$' are reserved: {stream_id!r}")
        if not events:
            return await self._append_nothing(stream_id, expected_version)

        append_id = str(uuid.uuid4())
        new_events = [self._encode(event, append_id) for event in events]
        current_version = (
            StreamState.NO_STREAM if expected_version == NO_STREAM else expected_version - 1
        )
        try:
            position = await self._client.append_to_stream(
                stream_id,
                events=new_events,
                current_version=current_version,
                timeout=self._timeout,
            )
        except WrongCurrentVersionError as exc:
            raise ConcurrencyError(
                stream_id, expected_version, _our_version(exc.actual_version)
            ) from exc
        except StreamIsDeletedError as exc:
            raise self._deleted(stream_id) from exc
        except (*_UNAVAILABLE_ERRORS, *_ACCESS_ERRORS) as exc:
            raise self._failure(exc) from exc
        except KurrentDBClientError as exc:
            # The library's catch-all for a batch-append error it cannot name, which is how
            # KurrentDB answers a write it did not handle (Streams.BatchAppend, NotHandled:
            # not ready, too busy, no leader yet): nothing was written, and the node takes
            # writes again once it has caught up.
            if type(exc) is not KurrentDBClientError:
                raise
            reason = getattr(exc.args[0], "message", "") if exc.args else ""
            raise EventStoreUnavailable(
                f"KurrentDB at {self._redacted_uri} did not take the write: {reason or exc}"
            ) from exc

        new_version = expected_version + len(events)
        # The server answers an append of event ids it already holds at those versions
        # with success, writing nothing: then a racing delivery of the same command got
        # there first, and this append must report a conflict, as the SQLite store does,
        # so that the handler reloads and answers `duplicate`. Only the last event tells.
        last = await self._event_at(stream_id, new_version)
        if _load_metadata(last.metadata).get(_APPEND_ID) != append_id:
            raise ConcurrencyError(stream_id, expected_version, new_version)
        # An idempotent repeat of this very append (the client retrying a lost answer) can
        # succeed without a position; the event read back has it.
        return AppendResult(
            version=new_version, position=position if position > 0 else last.commit_position
        )

    async def _append_nothing(self, stream_id: str, expected_version: int) -> AppendResult:
        # KurrentDB has no "check the version, write nothing" call, so check it by reading.
        try:
            current = await self._client.get_current_version(stream_id, timeout=self._timeout)
        except StreamIsDeletedError as exc:
            raise self._deleted(stream_id) from exc
        except (*_UNAVAILABLE_ERRORS, *_ACCESS_ERRORS) as exc:
            raise self._failure(exc) from exc
        actual = _our_version(current)
        if actual != expected_version:
            raise ConcurrencyError(stream_id, expected_version, actual)
        return AppendResult(version=expected_version, position=await self.head_position())

    async def _event_at(self, stream_id: str, version: int) -> KurrentRecordedEvent:
        try:
            found = await _read_whole(
                self._client,
                stream_id,
                stream_position=version - 1,
                limit=1,
                timeout=self._timeout,
            )
        except (*_UNAVAILABLE_ERRORS, *_ACCESS_ERRORS) as exc:
            raise self._failure(exc) from exc
        except (NotFoundError, StreamIsDeletedError):
            found = []
        if not found:
            # Deleted between the append and this read: nothing to confirm the append by.
            raise ConcurrencyError(stream_id, version, None)
        return found[0]

    async def read_stream(
        self,
        stream_id: str,
        *,
        to_version: int | None = None,
        as_of: datetime | None = None,
        after_version: int = 0,
    ) -> list[RecordedEvent]:
        after_version = max(after_version, 0)
        if to_version is not None and to_version <= after_version:
            return []
        try:
            found = await _read_whole(
                self._client,
                stream_id,
                # Stream positions count from 0: version v + 1 is at position v.
                stream_position=after_version or None,
                limit=to_version - after_version if to_version is not None else sys.maxsize,
                timeout=self._timeout,
            )
        except (NotFoundError, StreamIsDeletedError):
            # A deleted stream reads as a missing one (appending to it says why it fails).
            return []
        except (*_UNAVAILABLE_ERRORS, *_ACCESS_ERRORS) as exc:
            raise self._failure(exc) from exc

        cutoff = to_utc(as_of) if as_of is not None else None
        result: list[RecordedEvent] = []
        for event in found:
            if event.type.startswith("$"):
                continue
            recorded = self._decode(event)
            if cutoff is not None and recorded.occurred_at > cutoff:
                break
            result.append(recorded)
        return result

    async def read_all(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        if limit <= 0:
            return []
        result: list[RecordedEvent] = []
        cursor = after if after > 0 else None
        while len(result) < limit:
            # A read from a commit position includes the event at that position (when it
            # passes the filter), so ask for one more than we still need; and never for
            # only a handful, so that a run of events we drop costs few round trips.
            wanted = max(limit - len(result), _MIN_READ_BATCH) + (1 if cursor is not None else 0)
            batch = await self._read_log(commit_position=cursor, limit=wanted)
            for event in batch:
                if cursor is not None and event.commit_position <= cursor:
                    continue
                if _is_system(event):
                    continue
                # The global log holds other applications' events too: one whose data is
                # not ours to decode must not stop whoever follows the log.
                result.append(self._decode(event, foreign_data_ok=True))
                if len(result) == limit:
                    return result
            # The server counts only events that pass its filter, and stops short of the
            # count only at the end of the log.
            if len(batch) < wanted:
                break
            cursor = batch[-1].commit_position
        return result

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        name = f"{SNAPSHOT_STREAM_PREFIX}{snapshot.stream_id}"
        latest = await self._latest_snapshot_event(name)
        if latest is None:
            current: int | StreamState = StreamState.NO_STREAM
            try:
                await self._client.set_stream_metadata(
                    name, metadata={"$maxCount": 1}, timeout=self._timeout
                )
            except (*_UNAVAILABLE_ERRORS, *_ACCESS_ERRORS) as exc:
                raise self._failure(exc) from exc
        else:
            kept = _load_metadata(latest.metadata).get("version")
            if isinstance(kept, int) and kept >= snapshot.version:
                return
            current = latest.stream_position
        event = KurrentNewEvent(
            id=uuid.uuid4(),
            type=_SNAPSHOT_EVENT_TYPE,
            data=dumps(dict(snapshot.data)).encode("utf-8"),
            metadata=dumps(
                {
                    "version": snapshot.version,
                    _SCHEMA_VERSION: snapshot.schema_version,
                    "taken_at": format_time(snapshot.taken_at),
                }
            ).encode("utf-8"),
            content_type="application/json",
        )
        try:
            await self._client.append_to_stream(
                name, events=[event], current_version=current, timeout=self._timeout
            )
        except WrongCurrentVersionError:
            return  # another writer saved one meanwhile: a snapshot is only a cache
        except (*_UNAVAILABLE_ERRORS, *_ACCESS_ERRORS) as exc:
            raise self._failure(exc) from exc

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        latest = await self._latest_snapshot_event(f"{SNAPSHOT_STREAM_PREFIX}{stream_id}")
        if latest is None:
            return None
        try:
            metadata = json.loads(latest.metadata)
            data = json.loads(latest.data)
            if not isinstance(data, dict):
                raise TypeError(f"a JSON {type(data).__name__}, not an object")
            version, schema_version = metadata["version"], metadata[_SCHEMA_VERSION]
            if not isinstance(version, int) or not isinstance(schema_version, int):
                raise TypeError("version and schema_version must be integers")
            return Snapshot(
                stream_id, version, schema_version, data, parse_time(metadata["taken_at"])
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise UnreadableSnapshot(f"snapshot of {stream_id!r}: {exc}") from exc

    async def _latest_snapshot_event(self, name: str) -> KurrentRecordedEvent | None:
        try:
            found = await _read_whole(
                self._client, name, backwards=True, limit=1, timeout=self._timeout
            )
        except (NotFoundError, StreamIsDeletedError):
            return None
        except (*_UNAVAILABLE_ERRORS, *_ACCESS_ERRORS) as exc:
            raise self._failure(exc) from exc
        return found[0] if found else None

    async def head_position(self) -> int:
        cursor: int | None = None
        while True:
            batch = await self._read_log(
                commit_position=cursor, limit=_HEAD_SCAN_BATCH, backwards=True
            )
            for event in batch:
                if cursor is not None and event.commit_position >= cursor:
                    continue
                if not _is_system(event):
                    return event.commit_position
            if len(batch) < _HEAD_SCAN_BATCH:
                return 0
            cursor = batch[-1].commit_position

    async def _read_log(
        self, *, commit_position: int | None, limit: int, backwards: bool = False
    ) -> list[KurrentRecordedEvent]:
        try:
            return await _read_whole(
                self._client,
                None,
                commit_position=commit_position,
                backwards=backwards,
                filter_exclude=_SYSTEM_STREAMS_FILTER,
                filter_by_stream_name=True,
                limit=limit,
                timeout=self._timeout,
            )
        except InvalidCommitPositionError as exc:
            raise ValueError(
                f"{commit_position} is not the position of an event in {self._redacted_uri}"
            ) from exc
        except (*_UNAVAILABLE_ERRORS, *_ACCESS_ERRORS) as exc:
            raise self._failure(exc) from exc

    @property
    def _client(self) -> AsyncKurrentDBClient:
        if self._kurrent is None:
            raise RuntimeError("KurrentDBEventStore is not open: call open() first")
        return self._kurrent

    async def _probe(self, client: AsyncKurrentDBClient) -> None:
        # A read of one stream nobody writes: it goes through the streams service and its
        # authentication on a live node, but needs no more permission than any user has.
        # (Reading $all would do too, but only $admins may by default, and only the gateway,
        # rebuilds and `conveyor status` need it.) NotFound is the expected answer.
        try:
            await _read_whole(
                client, _PROBE_STREAM, backwards=True, limit=1, timeout=self._probe_timeout
            )
        except (NotFoundError, StreamIsDeletedError):
            pass
        except (*_UNAVAILABLE_ERRORS, *_ACCESS_ERRORS) as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: Exception) -> EventStoreUnavailable:
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, _ACCESS_ERRORS):
            return EventStoreUnavailable(
                f"KurrentDB at {self._redacted_uri} refused access "
                f"({type(exc).__name__}: {detail}): {_ACCESS_HINT}"
            )
        return EventStoreUnavailable(f"KurrentDB at {self._redacted_uri} is unreachable: {detail}")

    def _deleted(self, stream_id: str) -> ValueError:
        return ValueError(
            f"stream {stream_id!r} was deleted in KurrentDB at {self._redacted_uri}: "
            "it cannot be written again"
        )

    @staticmethod
    def _encode(event: NewEvent, append_id: str) -> KurrentNewEvent:
        if event.type.startswith("$"):
            raise ValueError(f"event types starting with '$' are reserved: {event.type!r}")
        clashing = _RESERVED_METADATA_KEYS.intersection(event.metadata)
        if clashing:
            # They would be silently overwritten by (or read back as) our own fields.
            raise ValueError(f"metadata keys {sorted(clashing)} are reserved by the store")
        metadata: dict[str, Any] = {
            _OCCURRED_AT: format_time(event.occurred_at),
            _SCHEMA_VERSION: event.schema_version,
            _APPEND_ID: append_id,
            **event.metadata,
        }
        return KurrentNewEvent(
            id=event.event_id,
            type=event.type,
            data=dumps(dict(event.data)).encode("utf-8"),
            metadata=dumps(metadata).encode("utf-8"),
            content_type="application/json",
        )

    @staticmethod
    def _decode(event: KurrentRecordedEvent, *, foreign_data_ok: bool = False) -> RecordedEvent:
        undecodable: str | None = None
        try:
            data = json.loads(event.data) if event.data else {}
        except ValueError as exc:  # not UTF-8 (UnicodeDecodeError) or not JSON
            data, undecodable = {}, f"not JSON: {exc}"
        except RecursionError:  # "[[[[…" nested deeper than the decoder's stack allows
            data, undecodable = {}, "JSON nested too deep to decode"
        if not isinstance(data, dict):
            data, undecodable = {}, f"JSON {type(data).__name__}, not an object"
        if undecodable is not None and not foreign_data_ok:
            raise ValueError(
                f"event {event.id} in {event.stream_name!r} does not hold a JSON object "
                f"({undecodable})"
            )
        metadata = _load_metadata(event.metadata)
        occurred_at_text = metadata.pop(_OCCURRED_AT, None)
        schema_version = metadata.pop(_SCHEMA_VERSION, 1)
        metadata.pop(_APPEND_ID, None)
        metadata.pop(UNDECODABLE_DATA, None)
        occurred_at: datetime | None = None
        if isinstance(occurred_at_text, str):
            # Another application's metadata may use the key its own way: like foreign
            # data, a time we cannot read must not stop whoever follows the log.
            with contextlib.suppress(ValueError, OverflowError):
                occurred_at = parse_time(occurred_at_text)
        if occurred_at is None:
            # Not written by us: the server's own timestamp is the best stand-in.
            occurred_at = to_utc(event.recorded_at or datetime.fromtimestamp(0, tz=UTC))
        kept = {k: v for k, v in metadata.items() if isinstance(v, str)}
        if undecodable is not None:
            kept[UNDECODABLE_DATA] = undecodable
        return RecordedEvent(
            event_id=event.id,
            stream_id=event.stream_name,
            version=event.stream_position + 1,
            position=event.commit_position,
            type=event.type,
            data=data,
            occurred_at=occurred_at,
            schema_version=schema_version if isinstance(schema_version, int) else 1,
            metadata=kept,
        )


@retrygrpc
@autoreconnect
async def _read_whole(
    client: AsyncKurrentDBClient, stream_name: str | None, **options: Any
) -> list[KurrentRecordedEvent]:
    """One read (of a stream, or of $all when `stream_name` is None), collected whole.

    The client's reads are lazy: their errors come while iterating, outside the retry and
    reconnect decorators of `read_all`/`read_stream` themselves. Iterating in here, under
    the same decorators as the client's own `get_stream`, lets an UNAVAILABLE answer
    reconnect and read again, and a not-leader answer follow the leader.

    The client is shared, and when any call reconnects it, the old connection's reads stop
    *without an error*: a page cut short that way would pass for the end of the log. So a
    read during which the connection changed is refused as UNAVAILABLE, which the
    decorators answer by reading again on the new connection, and which reaches callers as
    EventStoreUnavailable if it keeps happening.
    """
    connection_id = _connection_id(client)
    if stream_name is None:
        response = await client.read_all(**options)
    else:
        response = await client.read_stream(stream_name, **options)
    async with response:
        events = [event async for event in response]
    if _connection_id(client) is None:
        # Closed under the read, which stopped without an error: not a reason to
        # reconnect (the library's retry would fail on the closed client's missing
        # connection), and the same error as a call made after close().
        raise RuntimeError("KurrentDBEventStore was closed during a read")
    if _connection_id(client) != connection_id:
        raise ServiceUnavailableError(
            "the connection was replaced during a read, which may have ended early"
        )
    return events


def _connection_id(client: AsyncKurrentDBClient) -> uuid.UUID | None:
    try:
        return client.connection_id
    except (AttributeError, AssertionError):  # closed, or never connected
        return None


def _load_metadata(raw: bytes) -> dict[str, Any]:
    # Metadata of events written by other tools may be empty or not JSON at all; it is
    # context, not payload, so losing it beats refusing the event.
    if not raw:
        return {}
    try:
        loaded = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return dict(loaded) if isinstance(loaded, Mapping) else {}


def _our_version(kurrent_version: int | StreamState | None) -> int | None:
    if isinstance(kurrent_version, StreamState):
        return NO_STREAM if kurrent_version is StreamState.NO_STREAM else None
    if isinstance(kurrent_version, int):
        return kurrent_version + 1
    return None


async def _close_quietly(client: AsyncKurrentDBClient) -> None:
    # close() on a client whose connect() never completed raises instead of doing nothing.
    with contextlib.suppress(ProgrammingError):
        await client.close()
