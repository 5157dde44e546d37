"""The KurrentDB adapter of the event store port.

KurrentDB numbers stream events from 0 and we number them from 1, so an event's `version`
is its stream position + 1 and an expected version N is KurrentDB's "current version" N-1.
The global-log `position` is KurrentDB's commit position: every event of a multi-event
append gets its own, and they only grow.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kurrentdbclient import AsyncKurrentDBClient, StreamState
from kurrentdbclient import NewEvent as KurrentNewEvent
from kurrentdbclient import RecordedEvent as KurrentRecordedEvent
from kurrentdbclient.connection_spec import ConnectionSpec
from kurrentdbclient.exceptions import (
    DeadlineExceededError,
    DiscoveryFailedError,
    GrpcError,
    InvalidCommitPositionError,
    NodeIsNotLeaderError,
    NotFoundError,
    ProgrammingError,
    WrongCurrentVersionError,
)

from eventstore.port import (
    NO_STREAM,
    AppendResult,
    ConcurrencyError,
    EventStoreUnavailable,
    NewEvent,
    RecordedEvent,
)
from eventstore.serialization import dumps, format_time, parse_time, redact_url, to_utc

# Failures that say "the store is not answering right now", as opposed to "you asked for
# something wrong": callers retry these later. GrpcError covers UNAVAILABLE, gRPC deadlines,
# cancellations and internal errors; DeadlineExceededError adds the server-side append
# timeout; a leader change and failed cluster discovery are transient too.
_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    GrpcError,
    DeadlineExceededError,
    DiscoveryFailedError,
    NodeIsNotLeaderError,
)

# Applied by the server to stream names: it drops whole system streams ($stats-…, $$…
# metadata streams, projection output) before they cross the wire. System event types in
# ordinary streams are dropped on our side, because one read can filter on only one of the
# two.
_SYSTEM_STREAMS_FILTER = (r"\$.+",)

# Our keys in the KurrentDB metadata JSON; everything else there is the caller's metadata.
_OCCURRED_AT = "occurred_at"
_SCHEMA_VERSION = "schema_version"
_RESERVED_METADATA_KEYS = frozenset({_OCCURRED_AT, _SCHEMA_VERSION})

# How many events to look at per request when walking the log backwards for its head: the
# tail is usually ours, so one small read nearly always settles it.
_HEAD_SCAN_BATCH = 32
_MIN_READ_BATCH = 64


def _is_system(event: KurrentRecordedEvent) -> bool:
    return event.type.startswith("$") or event.stream_name.startswith("$")


class KurrentDBEventStore:
    """Event store on KurrentDB (or EventStoreDB 2x+) through kurrentdbclient's asyncio client.

    `uri` is a `kurrentdb://`, `kurrentdb+discover://`, `esdb://` or `esdb+discover://` URI;
    kurrentdbclient accepts all of them as they are. TLS is on by default and verifies the
    server (`tlsCaFile=/path/ca.crt` for a private CA; `userCertFile=`/`userKeyFile=` for
    client certificates); `?tls=false` is only for a local insecure development node.
    Credentials go in the URI (`kurrentdb://user:pass@host:2113`); messages show them masked.
    `timeout` bounds every call (seconds); `probe_timeout` bounds `open()`'s readiness probe
    and `ping()`.
    """

    def __init__(self, uri: str, *, timeout: float = 30.0, probe_timeout: float = 5.0) -> None:
        self._uri = uri
        self._redacted_uri = redact_url(uri)
        try:
            # Pure parsing, no I/O: a bad URI is a configuration error worth failing on at
            # construction rather than at the first open().
            ConnectionSpec(uri)
        except ValueError as exc:
            # The client's messages quote the whole URI, password included.
            raise ValueError(str(exc).replace(uri, self._redacted_uri)) from None
        self._timeout = timeout
        self._probe_timeout = probe_timeout
        self._kurrent: AsyncKurrentDBClient | None = None

    async def open(self) -> None:
        if self._kurrent is not None:
            return
        client = AsyncKurrentDBClient(self._uri)
        try:
            # For a single-target URI this only builds a gRPC channel and succeeds with no
            # server at all; the probe below is what proves the store is there.
            await client.connect()
            await self._probe(client)
        except EventStoreUnavailable:
            await _close_quietly(client)
            raise
        except _UNAVAILABLE_ERRORS as exc:
            await _close_quietly(client)
            raise self._unavailable(exc) from exc
        self._kurrent = client

    async def close(self) -> None:
        client, self._kurrent = self._kurrent, None
        if client is not None:
            await _close_quietly(client)

    async def ping(self) -> None:
        await self._probe(self._client)

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

        new_events = [self._encode(event) for event in events]
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
        except _UNAVAILABLE_ERRORS as exc:
            raise self._unavailable(exc) from exc

        new_version = expected_version + len(events)
        if position <= 0:
            # An idempotent repeat of an earlier identical append can succeed without a
            # position; the events are in the stream, so ask the stream where they are.
            position = await self._position_of(stream_id, new_version)
        return AppendResult(version=new_version, position=position)

    async def _append_nothing(self, stream_id: str, expected_version: int) -> AppendResult:
        # KurrentDB has no "check the version, write nothing" call, so check it by reading.
        try:
            current = await self._client.get_current_version(stream_id, timeout=self._timeout)
        except _UNAVAILABLE_ERRORS as exc:
            raise self._unavailable(exc) from exc
        actual = _our_version(current)
        if actual != expected_version:
            raise ConcurrencyError(stream_id, expected_version, actual)
        return AppendResult(version=expected_version, position=await self.head_position())

    async def _position_of(self, stream_id: str, version: int) -> int:
        try:
            found = await self._client.get_stream(
                stream_id, stream_position=version - 1, limit=1, timeout=self._timeout
            )
        except _UNAVAILABLE_ERRORS as exc:
            raise self._unavailable(exc) from exc
        return found[0].commit_position

    async def read_stream(
        self,
        stream_id: str,
        *,
        to_version: int | None = None,
        as_of: datetime | None = None,
    ) -> list[RecordedEvent]:
        if to_version is not None and to_version <= 0:
            return []
        try:
            # get_stream (not read_stream) because it iterates inside the client's
            # reconnect-and-retry wrapper and only hands back a complete read.
            found = await self._client.get_stream(
                stream_id,
                limit=to_version if to_version is not None else sys.maxsize,
                timeout=self._timeout,
            )
        except NotFoundError:
            return []
        except _UNAVAILABLE_ERRORS as exc:
            raise self._unavailable(exc) from exc

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
                result.append(self._decode(event))
                if len(result) == limit:
                    return result
            # The server counts only events that pass its filter, and stops short of the
            # count only at the end of the log.
            if len(batch) < wanted:
                break
            cursor = batch[-1].commit_position
        return result

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
            async with await self._client.read_all(
                commit_position=commit_position,
                backwards=backwards,
                filter_exclude=_SYSTEM_STREAMS_FILTER,
                filter_by_stream_name=True,
                limit=limit,
                timeout=self._timeout,
            ) as response:
                # The read is lazy: errors surface while iterating or when the response
                # closes, so both must stay inside this try.
                return [event async for event in response]
        except InvalidCommitPositionError as exc:
            raise ValueError(
                f"{commit_position} is not the position of an event in {self._redacted_uri}"
            ) from exc
        except _UNAVAILABLE_ERRORS as exc:
            raise self._unavailable(exc) from exc

    @property
    def _client(self) -> AsyncKurrentDBClient:
        if self._kurrent is None:
            raise RuntimeError("KurrentDBEventStore is not open: call open() first")
        return self._kurrent

    async def _probe(self, client: AsyncKurrentDBClient) -> None:
        # One record from the end of the unfiltered log: the cheapest call that still goes
        # through the streams service (and its authentication) of a live node.
        try:
            async with await client.read_all(
                backwards=True, filter_exclude=(), limit=1, timeout=self._probe_timeout
            ) as response:
                async for _ in response:
                    pass
        except _UNAVAILABLE_ERRORS as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: Exception) -> EventStoreUnavailable:
        detail = str(exc) or type(exc).__name__
        return EventStoreUnavailable(f"KurrentDB at {self._redacted_uri} is unreachable: {detail}")

    @staticmethod
    def _encode(event: NewEvent) -> KurrentNewEvent:
        if event.type.startswith("$"):
            raise ValueError(f"event types starting with '$' are reserved: {event.type!r}")
        clashing = _RESERVED_METADATA_KEYS.intersection(event.metadata)
        if clashing:
            # They would be silently overwritten by (or read back as) our own fields.
            raise ValueError(f"metadata keys {sorted(clashing)} are reserved by the store")
        metadata: dict[str, Any] = {
            _OCCURRED_AT: format_time(event.occurred_at),
            _SCHEMA_VERSION: event.schema_version,
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
    def _decode(event: KurrentRecordedEvent) -> RecordedEvent:
        data = json.loads(event.data) if event.data else {}
        if not isinstance(data, dict):
            raise ValueError(
                f"event {event.id} in {event.stream_name!r} does not hold a JSON object"
            )
        metadata = _load_metadata(event.metadata)
        occurred_at_text = metadata.pop(_OCCURRED_AT, None)
        schema_version = metadata.pop(_SCHEMA_VERSION, 1)
        if isinstance(occurred_at_text, str):
            occurred_at = parse_time(occurred_at_text)
        else:
            # Not written by us: the server's own timestamp is the best stand-in.
            occurred_at = to_utc(event.recorded_at or datetime.fromtimestamp(0, tz=UTC))
        return RecordedEvent(
            event_id=event.id,
            stream_id=event.stream_name,
            version=event.stream_position + 1,
            position=event.commit_position,
            type=event.type,
            data=data,
            occurred_at=occurred_at,
            schema_version=schema_version if isinstance(schema_version, int) else 1,
            metadata={k: v for k, v in metadata.items() if isinstance(v, str)},
        )


def _load_metadata(raw: bytes) -> dict[str, Any]:
    # Metadata of events written by other tools may be empty or not JSON at all; it is
    # context, not payload, so losing it beats refusing the event.
    if not raw:
        return {}
    try:
        loaded = json.loads(raw)
    except ValueError:
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
