"""kurrentdbclient's own generated gRPC servicers, scripted per test, served on localhost.

NOT a KurrentDB, and no evidence of how KurrentDB behaves. It answers the client library's
calls in the shapes the library's generated stubs and error handling expect, so that tests
can show how `conveyor/eventstore/kurrentdb.py` copes with what the *library* does: reconnecting a
shared client, retrying (or not) a lazy read, following a not-leader answer, raising
AccessDenied. What a real server does is covered by the contract suite, run against a real
KurrentDB when CONVEYOR_TEST_KURRENTDB_URL is set.

The Streams servicer keeps a small in-memory log. Reads of $all ignore the server-side
filter (tests put no system events in the log); appends follow the documented idempotence
rule (the same event ids at the versions they already hold: success, nothing written).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.protobuf import empty_pb2
from kurrentdbclient.protos.v1 import (
    gossip_pb2,
    gossip_pb2_grpc,
    shared_pb2,
    status_pb2,
    streams_pb2,
    streams_pb2_grpc,
)

# One scripted failure: the gRPC status, its details, and trailing metadata.
Failure = tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]


@dataclass
class StoredEvent:
    stream: str
    id: uuid.UUID
    type: str
    data: bytes
    metadata: bytes
    revision: int
    commit_position: int


@dataclass
class ScriptedStreams(streams_pb2_grpc.StreamsServicer):  # type: ignore[misc]
    """The Streams service over an in-memory log, with scripted failures."""

    log: list[StoredEvent] = field(default_factory=list)
    # Popped one per Read / BatchAppend call, before it is served.
    read_failures: list[Failure] = field(default_factory=list)
    append_failures: list[Failure] = field(default_factory=list)
    # Popped one per BatchAppend request: answered, as KurrentDB answers a write it did not
    # handle (not ready, too busy, no leader yet), with an error inside the response whose
    # only detail is an Empty.
    append_not_handled: list[str] = field(default_factory=list)
    # Streams tombstoned: reading them fails, appending answers StreamDeleted.
    deleted: set[str] = field(default_factory=set)
    # Appends written whose answer is then lost (UNAVAILABLE), as when a node goes away.
    lost_append_answers: int = 0
    # Pause between the events of one read answer, so that tests can act mid-read.
    event_delay: float = 0.0
    # Pause before answering each Read, so that concurrent readers all see the same state.
    read_delay: float = 0.0
    reads: int = 0
    appends: int = 0
    # What each Read asked for: a stream name, or "$all".
    read_targets: list[str] = field(default_factory=list)

    # ---------------------------------------------------------------- the log

    def add(self, stream: str, type_: str, data: bytes, metadata: bytes = b"") -> StoredEvent:
        revision = sum(1 for e in self.log if e.stream == stream)
        position = (self.log[-1].commit_position if self.log else 0) + 137  # bytes, not counts
        event = StoredEvent(stream, uuid.uuid4(), type_, data, metadata, revision, position)
        self.log.append(event)
        return event

    def stream(self, name: str) -> list[StoredEvent]:
        return [e for e in self.log if e.stream == name]

    # ---------------------------------------------------------------- Read

    async def Read(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        self.reads += 1
        if self.read_failures:
            await _abort(context, self.read_failures.pop(0))
        if self.read_delay:
            await asyncio.sleep(self.read_delay)
        options = request.options
        self.read_targets.append(
            options.stream.stream_identifier.stream_name.decode()
            if options.WhichOneof("stream_option") == "stream"
            else "$all"
        )
        backwards = options.read_direction == streams_pb2.ReadReq.Options.Backwards
        count = options.count
        if options.WhichOneof("stream_option") == "stream":
            name = options.stream.stream_identifier.stream_name.decode()
            if name in self.deleted:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION, f"Event stream '{name}' is deleted."
                )
            events = self.stream(name)
            if not events:
                yield streams_pb2.ReadResp(stream_not_found=streams_pb2.ReadResp.StreamNotFound())
                return
            which = options.stream.WhichOneof("revision_option")
            if which == "revision":
                at = options.stream.revision
                events = [
                    e for e in events if (e.revision <= at if backwards else e.revision >= at)
                ]
        else:
            events = list(self.log)
            which = options.all.WhichOneof("all_option")
            if which == "position":
                at = options.all.position.commit_position
                events = [
                    e
                    for e in events
                    if (e.commit_position <= at if backwards else e.commit_position >= at)
                ]
        if backwards:
            events.reverse()
        for event in events[:count]:
            if self.event_delay:
                await asyncio.sleep(self.event_delay)
            yield _read_resp(event)

    # ---------------------------------------------------------------- BatchAppend

    async def BatchAppend(
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for request in request_iterator:
            self.appends += 1
            if self.append_failures:
                await _abort(context, self.append_failures.pop(0))
            response = self._append(request)
            if self.lost_append_answers:
                self.lost_append_answers -= 1
                await _abort(context, unavailable("scripted: answer lost after the write"))
            yield response
            if request.is_final:
                return

    def _append(self, request: Any) -> Any:
        options = request.options
        name = options.stream_identifier.stream_name.decode()
        response = streams_pb2.BatchAppendResp(
            correlation_id=request.correlation_id, stream_identifier=options.stream_identifier
        )
        if self.append_not_handled:
            status = status_pb2.Status(message=self.append_not_handled.pop(0))
            status.details.Pack(empty_pb2.Empty())
            response.error.CopyFrom(status)
            return response
        if name in self.deleted:
            response.error.CopyFrom(_status(shared_pb2.StreamDeleted()))
            return response
        existing = self.stream(name)
        expected = (
            options.stream_position
            if options.WhichOneof("expected_stream_position") == "stream_position"
            else -1
        )
        ids = [uuid.UUID(m.id.string) for m in request.proposed_messages]
        held = [e.id for e in existing[expected + 1 : expected + 1 + len(ids)]]
        if held == ids and ids:
            # Idempotent repeat: success, nothing written, the original position.
            last = existing[expected + len(ids)]
            response.success.current_revision = last.revision
            response.success.position.commit_position = last.commit_position
            response.success.position.prepare_position = last.commit_position
            return response
        if len(existing) - 1 != expected:
            wrong = shared_pb2.WrongExpectedVersion()
            if existing:
                wrong.current_stream_revision = len(existing) - 1
            else:
                wrong.current_no_stream.CopyFrom(shared_pb2.Empty())
            response.error.CopyFrom(_status(wrong))
            return response
        for message in request.proposed_messages:
            added = self.add(name, message.metadata["type"], message.data, message.custom_metadata)
            added.id = uuid.UUID(message.id.string)
        response.success.current_revision = self.log[-1].revision
        response.success.position.commit_position = self.log[-1].commit_position
        response.success.position.prepare_position = self.log[-1].commit_position
        return response


@dataclass
class ScriptedGossip(gossip_pb2_grpc.GossipServicer):  # type: ignore[misc]
    """Gossip answering that the node at `leader_port` is the one leader (and the one at
    `follower_port`, if any, a follower); or never."""

    leader_port: int = 0
    follower_port: int = 0
    hang: bool = False

    async def Read(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if self.hang:
            await asyncio.Event().wait()
        member = gossip_pb2.MemberInfo(
            state=gossip_pb2.MemberInfo.VNodeState.Leader,
            is_alive=True,
            http_end_point=gossip_pb2.EndPoint(address="127.0.0.1", port=self.leader_port),
        )
        members = [member]
        if self.follower_port:
            members.append(
                gossip_pb2.MemberInfo(
                    state=gossip_pb2.MemberInfo.VNodeState.Follower,
                    is_alive=True,
                    http_end_point=gossip_pb2.EndPoint(
                        address="127.0.0.1", port=self.follower_port
                    ),
                )
            )
        return gossip_pb2.ClusterInfo(members=members)


class ScriptedNode:
    """One local grpc.aio server with the scripted servicers; `uri` reaches it without TLS."""

    def __init__(self, streams: ScriptedStreams | None = None) -> None:
        self.streams = streams or ScriptedStreams()
        self.gossip = ScriptedGossip()
        self._server = grpc.aio.server()
        streams_pb2_grpc.add_StreamsServicer_to_server(self.streams, self._server)
        gossip_pb2_grpc.add_GossipServicer_to_server(self.gossip, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.gossip.leader_port = self.port

    @property
    def uri(self) -> str:
        return f"kurrentdb://127.0.0.1:{self.port}?tls=false"

    async def __aenter__(self) -> ScriptedNode:
        await self._server.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._server.stop(grace=None)


def not_leader(leader: ScriptedNode) -> Failure:
    """The older not-leader answer the library understands: NOT_FOUND + leader endpoint."""
    return (
        grpc.StatusCode.NOT_FOUND,
        "Leader info available",
        (("leader-endpoint-host", "127.0.0.1"), ("leader-endpoint-port", str(leader.port))),
    )


def unavailable(details: str = "scripted: node restarting") -> Failure:
    return (grpc.StatusCode.UNAVAILABLE, details, ())


async def _abort(context: grpc.aio.ServicerContext, failure: Failure) -> None:
    code, details, trailing = failure
    if trailing:
        context.set_trailing_metadata(trailing)
    await context.abort(code, details)


def _status(detail: Any) -> Any:
    status = status_pb2.Status(code=9, message="scripted")
    status.details.Pack(detail)
    return status


def _read_resp(event: StoredEvent) -> Any:
    recorded = streams_pb2.ReadResp.ReadEvent.RecordedEvent(
        id=shared_pb2.UUID(string=str(event.id)),
        stream_identifier=shared_pb2.StreamIdentifier(stream_name=event.stream.encode()),
        stream_revision=event.revision,
        prepare_position=event.commit_position,
        commit_position=event.commit_position,
        metadata={"type": event.type, "content-type": "application/json", "created": "0"},
        custom_metadata=event.metadata,
        data=event.data,
    )
    return streams_pb2.ReadResp(
        event=streams_pb2.ReadResp.ReadEvent(event=recorded, commit_position=event.commit_position)
    )
