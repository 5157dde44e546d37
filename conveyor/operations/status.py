"""`conveyor status`: queue depths, gateway and projection lag, and a health verdict.

Collecting reads three sources directly — the RabbitMQ management API (queue statistics),
the event store (the end of the global log) and the read store (the gateway's checkpoint,
the projections' recorded progress). Everything else is pure: raw statistics in, a
StatusReport with its reasons for being unhealthy out.

Lag of a consumer of the global log at position P:
  events behind  = events after P that it has to handle (the gateway: every event; a
                   projection: the events of the aggregates that list it among their
                   read models, the only ones it is sent), counted by reading the log
                   after P; the scan stops
                   after max(status_max_lag_events + 1, 10 000) events, and a count
                   that reaches it is a lower bound;
  seconds behind = now - occurred_at of the first such event (0 when caught up): the age
                   of the oldest event it has not handled yet.
A projection's position is the highest position it has applied (conveyor/readmodels/progress.py),
recorded at most once a second: a projection that has just caught up can look up to a
second behind, and events below that high-water mark may still be queued — its pending
messages are shown next to it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from conveyor.aggregates import AGGREGATES
from conveyor.bootstrap import (
    command_queues,
    describe_event_store,
    describe_read_store,
    process_manager_queue,
    projection_queue,
)
from conveyor.eventstore.port import EventStore, EventStoreUnavailable, RecordedEvent
from conveyor.eventstore.serialization import redact_url
from conveyor.gateway.relay import GATEWAY_CHECKPOINT
from conveyor.operations.management import (
    ManagementApi,
    ManagementApiError,
    amqp_vhost,
    management_url,
)
from conveyor.readmodels.checkpoints import CHECKPOINTS
from conveyor.readmodels.port import ReadModelStore, ReadStoreUnavailable
from conveyor.readmodels.progress import read_progress
from conveyor.readmodels.projections import PROJECTIONS
from conveyor.settings import Settings
from conveyor.workflows.states import WorkflowStates, WorkflowSummary
from messaging.topology import WorkQueue

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
EXIT_UNAVAILABLE = 2
"""Exit codes of `conveyor status`: 2 = the status could not be collected at all."""

SCAN_PAGE = 1000
MIN_SCAN_LIMIT = 10_000
RECOMMENDED_FD_LIMIT = 50_000
"""RabbitMQ's production checklist: allow the broker at least 50K open file descriptors."""


# --- queues -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueStats:
    name: str
    exists: bool
    ready: int = 0
    unacked: int = 0
    consumers: int = 0
    publish_rate: float = 0.0
    deliver_rate: float = 0.0
    ack_rate: float = 0.0

    @property
    def messages(self) -> int:
        return self.ready + self.unacked

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "exists": self.exists,
            "messages": self.messages,
            "ready": self.ready,
            "unacked": self.unacked,
            "consumers": self.consumers,
            "publish_rate": self.publish_rate,
            "deliver_rate": self.deliver_rate,
            "ack_rate": self.ack_rate,
        }


def _rate(stats: Mapping[str, Any], key: str) -> float:
    details = stats.get(key)
    if not isinstance(details, Mapping):
        return 0.0
    return round(float(details.get("rate") or 0.0), 2)


def queue_stats(name: str, raw: Mapping[str, Any] | None) -> QueueStats:
    """A queue's numbers from the management API's answer (None: the queue is missing).

    `message_stats` is absent on a queue that has seen no traffic since the statistics
    were last reset: its rates are 0.
    """
    if raw is None:
        return QueueStats(name, exists=False)
    stats = raw.get("message_stats")
    if not isinstance(stats, Mapping):
        stats = {}
    return QueueStats(
        name,
        exists=True,
        ready=int(raw.get("messages_ready") or 0),
        unacked=int(raw.get("messages_unacknowledged") or 0),
        consumers=int(raw.get("consumers") or 0),
        publish_rate=_rate(stats, "publish_details"),
        deliver_rate=_rate(stats, "deliver_get_details"),
        ack_rate=_rate(stats, "ack_details"),
    )


@dataclass(frozen=True, slots=True)
class QueueGroup:
    """A work queue with its retry ladder and dead-letter queue."""

    owner: str
    work: QueueStats
    retries: tuple[QueueStats, ...]
    dead_letters: QueueStats

    @property
    def pending(self) -> int:
        """Messages not yet handled: in the work queue or waiting on the retry ladder."""
        return self.work.messages + sum(queue.messages for queue in self.retries)

    def as_json(self) -> dict[str, Any]:
        return {
            "work": self.work.as_json(),
            "retries": [queue.as_json() for queue in self.retries],
            "dead_letters": self.dead_letters.as_json(),
            "pending_messages": self.pending,
        }


def queue_names(queue: WorkQueue) -> list[str]:
    return [rabbit.name for rabbit in queue.all_queues()]


def queue_group(
    owner: str, queue: WorkQueue, raw: Mapping[str, Mapping[str, Any] | None]
) -> QueueGroup:
    retries = tuple(queue_stats(r.name, raw.get(r.name)) for r in queue.retries())
    return QueueGroup(
        owner,
        queue_stats(queue.name, raw.get(queue.name)),
        retries,
        queue_stats(queue.dead_letter_queue, raw.get(queue.dead_letter_queue)),
    )


# --- lag ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogEntry:
    """What lag needs of one event of the global log."""

    position: int
    occurred_at: float
    integration: bool
    """Published (an event with an integration contract: the registry says)."""
    read_models: tuple[str, ...] = ()
    """The projections it is sent to: those of the aggregate that publishes it."""

    @classmethod
    def of(cls, event: RecordedEvent) -> LogEntry:
        publisher = AGGREGATES.publisher_of(event)
        return cls(
            event.position,
            event.occurred_at.timestamp(),
            publisher is not None,
            publisher.read_models if publisher is not None else (),
        )


@dataclass(frozen=True, slots=True)
class LogTail:
    """The events after some position, as far as a bounded scan read them."""

    entries: tuple[LogEntry, ...] = ()
    complete: bool = True
    """False when the scan stopped at its limit: counts are lower bounds."""


@dataclass(frozen=True, slots=True)
class Lag:
    position: int | None
    """None: nothing recorded yet (lag is counted from the start of the log)."""
    events_behind: int
    events_behind_is_lower_bound: bool
    seconds_behind: float

    def over(self, max_events: int, max_seconds: float) -> bool:
        return self.events_behind > max_events or self.seconds_behind > max_seconds

    def as_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "events_behind": self.events_behind,
            "events_behind_is_lower_bound": self.events_behind_is_lower_bound,
            "seconds_behind": self.seconds_behind,
        }


def lag_at(
    position: int | None,
    tail: LogTail,
    now: float,
    *,
    integration_only: bool = False,
    projection: str | None = None,
) -> Lag:
    """How far a consumer at `position` is behind, from the scanned tail of the log (a
    projection: counting only the events its aggregates send it)."""
    after = position or 0
    behind = [
        entry
        for entry in tail.entries
        if entry.position > after
        and (entry.integration or not integration_only)
        and (projection is None or projection in entry.read_models)
    ]
    seconds = max(0.0, now - behind[0].occurred_at) if behind else 0.0
    return Lag(position, len(behind), not tail.complete, round(seconds, 3))


async def scan_log(store: EventStore, after: int, limit: int) -> LogTail:
    """The events after `after`, at most `limit` of them, reduced to what lag needs."""
    entries: list[LogEntry] = []
    while len(entries) < limit:
        page = await store.read_all(after=after, limit=min(SCAN_PAGE, limit - len(entries)))
        entries.extend(LogEntry.of(event) for event in page)
        if not page:
            return LogTail(tuple(entries), complete=True)
        after = page[-1].position
    # Full: complete only if nothing follows.
    more = await store.read_all(after=after, limit=1)
    return LogTail(tuple(entries), complete=not more)


# --- the report ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    lag: Lag
    owner: str | None
    lease_active: bool

    def as_json(self) -> dict[str, Any]:
        return {**self.lag.as_json(), "owner": self.owner, "lease_active": self.lease_active}


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    name: str
    lag: Lag
    queues: QueueGroup
    updated_at: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            **self.lag.as_json(),
            "pending_messages": self.queues.pending,
            "dead_letters": self.queues.dead_letters.messages,
            "updated_at": _iso(self.updated_at) if self.updated_at else None,
        }


@dataclass(frozen=True, slots=True)
class Limits:
    max_lag_events: int
    max_lag_seconds: float


@dataclass(frozen=True, slots=True)
class StatusReport:
    checked_at: float
    sources: Mapping[str, str]
    limits: Limits
    head_position: int
    commands: QueueGroup
    """The first registered aggregate's command queue (`queues.commands` in JSON)."""
    gateway: GatewayStatus
    projections: tuple[ProjectionStatus, ...]
    more_commands: tuple[QueueGroup, ...] = field(default=())
    """Every other registered aggregate's command queue."""
    workflows: QueueGroup | None = None
    """The process manager's input queue (conveyor/workflows)."""
    stuck_workflows: tuple[WorkflowSummary, ...] = field(default=())
    """Workflows still waiting past their deadline plus the margin (at most 100 listed)."""
    reasons: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())
    """Worth an operator's attention, not unhealthy (they do not change the exit code)."""

    @property
    def healthy(self) -> bool:
        return not self.reasons

    @property
    def exit_code(self) -> int:
        return EXIT_HEALTHY if self.healthy else EXIT_UNHEALTHY

    @property
    def groups(self) -> tuple[QueueGroup, ...]:
        return (
            self.commands,
            *self.more_commands,
            *(projection.queues for projection in self.projections),
            *((self.workflows,) if self.workflows is not None else ()),
        )

    @property
    def dead_letters(self) -> int:
        return sum(group.dead_letters.messages for group in self.groups)

    def verdict(self) -> str:
        return "healthy" if self.healthy else "unhealthy: " + "; ".join(self.reasons)

    def as_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "exit_code": self.exit_code,
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
            "checked_at": _iso(self.checked_at),
            "sources": dict(self.sources),
            "limits": {
                "max_lag_events": self.limits.max_lag_events,
                "max_lag_seconds": self.limits.max_lag_seconds,
            },
            "head_position": self.head_position,
            "queues": {
                "commands": self.commands.as_json(),
                **(
                    {"more_commands": {g.owner: g.as_json() for g in self.more_commands}}
                    if self.more_commands
                    else {}
                ),
                "projections": {p.name: p.queues.as_json() for p in self.projections},
            },
            "dead_letters": self.dead_letters,
            "gateway": self.gateway.as_json(),
            "projections": {p.name: p.as_json() for p in self.projections},
            "workflows": {
                "queues": self.workflows.as_json() if self.workflows is not None else None,
                "dead_letters": self.workflows.dead_letters.messages if self.workflows else 0,
                "stuck": [summary.as_json() for summary in self.stuck_workflows],
            },
        }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat().replace("+00:00", "Z")


def _events(count: int, lower_bound: bool) -> str:
    return f"{'≥' if lower_bound else ''}{count} event{'' if count == 1 else 's'}"


def _lag_reason(who: str, lag: Lag, limits: Limits) -> str:
    return (
        f"{who} is {_events(lag.events_behind, lag.events_behind_is_lower_bound)} / "
        f"{lag.seconds_behind:.1f}s behind (limits {limits.max_lag_events} events, "
        f"{limits.max_lag_seconds:g}s)"
    )


def broker_warnings(nodes: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per broker node whose open-files limit is below the production checklist's.

    Each quorum queue is a Raft group holding file handles: at 1024 (Debian's default for a
    service started by hand) a few hundred queues make RabbitMQ 3.x stop accepting
    connections, without an error anywhere."""
    warnings = []
    for node in nodes:
        fd_total = node.get("fd_total")
        if isinstance(fd_total, int) and fd_total < RECOMMENDED_FD_LIMIT:
            warnings.append(
                f"RabbitMQ node {node.get('name', '?')} may open only {fd_total} files "
                f"(fd_total); its production checklist asks for at least "
                f"{RECOMMENDED_FD_LIMIT}: raise the broker's open-files limit (LimitNOFILE= "
                "in its systemd unit, or `ulimit -n 65536` before rabbitmq-server) and "
                "restart it"
            )
    return warnings


def health_reasons(
    commands: QueueGroup,
    gateway: GatewayStatus,
    projections: Sequence[ProjectionStatus],
    limits: Limits,
    more_commands: Sequence[QueueGroup] = (),
) -> list[str]:
    """Why the system is unhealthy (empty: healthy)."""
    reasons: list[str] = []
    groups = [commands, *more_commands, *(projection.queues for projection in projections)]
    for group in groups:
        if not group.work.exists:
            reasons.append(f"queue {group.work.name} does not exist (no worker declared it yet)")
        elif group.work.consumers == 0:
            reasons.append(f"no consumer on {group.work.name}")
    if gateway.lag.over(limits.max_lag_events, limits.max_lag_seconds):
        reasons.append(_lag_reason("gateway", gateway.lag, limits))
    for projection in projections:
        if projection.lag.over(limits.max_lag_events, limits.max_lag_seconds):
            reasons.append(_lag_reason(f"projection {projection.name}", projection.lag, limits))
    for group in groups:
        count = group.dead_letters.messages
        if count:
            reasons.append(
                f"{count} message{'' if count == 1 else 's'} in {group.dead_letters.name}"
            )
    return reasons


def build_report(
    *,
    now: float,
    sources: Mapping[str, str],
    limits: Limits,
    head_position: int,
    raw_queues: Mapping[str, Mapping[str, Any] | None],
    command: WorkQueue,
    projection_queues: Mapping[str, WorkQueue],
    more_commands: Sequence[WorkQueue] = (),
    gateway_checkpoint: Mapping[str, Any] | None,
    progress: Mapping[str, tuple[int, float]],
    tail: LogTail,
    nodes: Sequence[Mapping[str, Any]] = (),
    blocked_connections: Sequence[str] = (),
    unavailable: Sequence[str] = (),
    workflows_queue: WorkQueue | None = None,
    stuck_workflows: Sequence[WorkflowSummary] = (),
) -> StatusReport:
    """The report from raw inputs: management API answers by queue name, the gateway's
    checkpoint document, the projections' recorded (position, updated_at), and the tail of
    the log after the lowest of those positions."""
    commands = queue_group("commands", command, raw_queues)
    others = tuple(queue_group(queue.name, queue, raw_queues) for queue in more_commands)
    checkpoint = gateway_checkpoint or {}
    gateway = GatewayStatus(
        lag_at(int(checkpoint.get("position", 0)), tail, now),
        checkpoint.get("owner"),
        float(checkpoint.get("expires_at", 0)) > now,
    )
    projections = []
    for name, queue in projection_queues.items():
        recorded = progress.get(name)
        projections.append(
            ProjectionStatus(
                name,
                lag_at(
                    recorded[0] if recorded else None,
                    tail,
                    now,
                    integration_only=True,
                    projection=name,
                ),
                queue_group(name, queue, raw_queues),
                recorded[1] if recorded else None,
            )
        )
    workflows = (
        queue_group("workflows", workflows_queue, raw_queues)
        if workflows_queue is not None
        else None
    )
    workflow_problems = workflow_reasons(workflows, stuck_workflows)
    return StatusReport(
        checked_at=now,
        sources=sources,
        limits=limits,
        head_position=head_position,
        commands=commands,
        gateway=gateway,
        projections=tuple(projections),
        more_commands=others,
        workflows=workflows,
        stuck_workflows=tuple(stuck_workflows),
        reasons=(
            *unavailable,
            *health_reasons(commands, gateway, projections, limits, others),
            *workflow_problems,
            *_blocked_reasons(blocked_connections),
        ),
        warnings=tuple(broker_warnings(nodes)),
    )


def workflow_reasons(group: QueueGroup | None, stuck: Sequence[WorkflowSummary]) -> list[str]:
    """Why the workflows make the system unhealthy: dead-lettered inputs, stuck workflows.
    The process manager's queue without a consumer is shown in the queue table but is not
    a reason (nor a warning): a deployment may run the commands without the workflow."""
    reasons: list[str] = []
    count = group.dead_letters.messages if group is not None else 0
    if count:
        assert group is not None
        reasons.append(
            f"{count} workflow input{'' if count == 1 else 's'} dead-lettered in "
            f"{group.dead_letters.name}"
        )
    if stuck:
        shown = ", ".join(
            f"{s.order_id} ({s.status}, deadline {s.deadline})" for s in stuck[:3]
        ) + (", …" if len(stuck) > 3 else "")
        reasons.append(
            f"{len(stuck)}{'+' if len(stuck) >= 100 else ''} workflow(s) stuck past their "
            f"deadline: {shown}"
        )
    return reasons


def _blocked_reasons(blocked: Sequence[str]) -> list[str]:
    """Connections a resource alarm blocks: their publishes wait (then time out) until it
    ends, whatever the queues say."""
    if not blocked:
        return []
    names = ", ".join(blocked[:3]) + (", …" if len(blocked) > 3 else "")
    return [f"{len(blocked)} connection(s) blocked by a memory or disk alarm: {names}"]


def blocked_connections(connections: Sequence[Mapping[str, Any]]) -> list[str]:
    """The management API's connections that the broker blocks (state `blocked`, or
    `blocking`: flagged, and blocked at their next publish)."""
    return [
        str(c.get("client_properties", {}).get("connection_name") or c.get("name"))
        for c in connections
        if c.get("state") in ("blocked", "blocking")
    ]


# --- collecting ---------------------------------------------------------------------------


def sources(settings: Settings) -> dict[str, str]:
    """Where the status comes from, passwords redacted."""
    return {
        "rabbitmq": redact_url(settings.amqp_url),
        "management_api": redact_url(management_url(settings)),
        "vhost": amqp_vhost(settings),
        "event_store": describe_event_store(settings),
        "read_store": describe_read_store(settings),
    }


async def collect_status(
    settings: Settings,
    event_store: EventStore,
    read_store: ReadModelStore,
    api: ManagementApi,
    *,
    clock: Any = time.time,
) -> StatusReport:
    command, *more_commands = [queue for _, queue in command_queues(settings)]
    projection_queues = {p.name: projection_queue(settings, p) for p in PROJECTIONS}
    workflows_queue = process_manager_queue(settings)
    names = [
        name
        for queue in (command, *more_commands, *projection_queues.values(), workflows_queue)
        for name in queue_names(queue)
    ]
    answers = await asyncio.gather(*(api.queue(name) for name in names))
    raw_queues = dict(zip(names, answers, strict=True))
    try:
        nodes = await api.nodes()
    except ManagementApiError:  # a user without the monitoring tag: no node limits to show
        nodes = []
    try:
        blocked = blocked_connections(await api.connections())
    except ManagementApiError:  # a user who may not list the vhost's connections
        blocked = []

    # A store that does not answer is part of the report, not a failure of it: its
    # consumers are paused (messaging/store_outage.py) and the operator wants to see why.
    unavailable: list[str] = []
    checkpoint: Mapping[str, Any] | None = None
    progress: dict[str, tuple[int, float]] = {}
    stuck: list[WorkflowSummary] = []
    try:
        checkpoint_document = await read_store.get(CHECKPOINTS, GATEWAY_CHECKPOINT)
        checkpoint = checkpoint_document.body if checkpoint_document else None
        recorded = await read_progress(read_store, list(projection_queues))
        progress = {name: (p.position, p.updated_at) for name, p in recorded.items()}
        stuck = await WorkflowStates(read_store).stuck(
            datetime.fromtimestamp(clock(), UTC),
            timedelta(seconds=settings.fulfilment_stuck_margin),
        )
    except ReadStoreUnavailable as exc:
        unavailable.append(
            f"read store unavailable, projection consumers paused until it answers: {exc}"
        )
    head = 0
    tail = LogTail()
    try:
        head = await event_store.head_position()
        positions = [int((checkpoint or {}).get("position", 0))]
        positions += [progress[name][0] if name in progress else 0 for name in projection_queues]
        lowest = min(positions)
        limit = max(settings.status_max_lag_events + 1, MIN_SCAN_LIMIT)
        tail = await scan_log(event_store, lowest, limit) if lowest < head else LogTail()
    except EventStoreUnavailable as exc:
        unavailable.append(
            f"event store unavailable, command consumers paused until it answers: {exc}"
        )

    return build_report(
        now=clock(),
        sources=sources(settings),
        limits=Limits(settings.status_max_lag_events, settings.status_max_lag_seconds),
        head_position=head,
        raw_queues=raw_queues,
        command=command,
        projection_queues=projection_queues,
        more_commands=more_commands,
        gateway_checkpoint=checkpoint,
        progress=progress,
        tail=tail,
        nodes=nodes,
        blocked_connections=blocked,
        unavailable=unavailable,
        workflows_queue=workflows_queue,
        stuck_workflows=stuck,
    )


# --- the screen ---------------------------------------------------------------------------


def render(report: StatusReport, *, with_verdict: bool = True) -> Group:
    """The report as one screen: sources, queues, lag, verdict."""
    header = Text.assemble(
        ("conveyor status ", "bold"),
        f"at {_iso(report.checked_at)}\n",
        f"RabbitMQ {report.sources['rabbitmq']} (management {report.sources['management_api']})\n",
        f"event store {report.sources['event_store']}, head position {report.head_position}\n",
        f"read store {report.sources['read_store']}",
    )
    queues = Table(
        title="queues (work queue, its retry tiers, its dead letters)",
        caption="messages per second: published, delivered, acknowledged",
    )
    queues.add_column("queue", no_wrap=True)
    for column in ("ready", "unacked", "consumers", "pub/s", "dlv/s", "ack/s"):
        queues.add_column(column, justify="right")
    for group in report.groups:
        rows = [("work", group.work), ("retry", _retry_ladder(group)), ("dlq", group.dead_letters)]
        for role, queue in rows:
            queues.add_row(*_queue_row(role, queue))
        queues.add_section()
    lag = Table(title="lag behind the global log")
    for column in ("component", "position", "events behind", "seconds behind", "pending", "dlq"):
        lag.add_column(column, justify="left" if column == "component" else "right")
    limits = report.limits
    gateway = report.gateway
    lease = "" if gateway.lease_active else " (no active lease)"
    lag.add_row(f"gateway{lease}", *_lag_cells(gateway.lag, limits), "", "")
    for projection in report.projections:
        dlq = projection.queues.dead_letters.messages
        lag.add_row(
            projection.name,
            *_lag_cells(projection.lag, limits),
            str(projection.queues.pending),
            Text(str(dlq), style="red" if dlq else ""),
        )
    warnings = [Text(f"warning: {line}", style="yellow") for line in report.warnings]
    parts: list[Text | Table] = [header, queues, lag]
    if report.stuck_workflows:
        stuck = Table(title="stuck workflows (past their deadline plus the margin)")
        for column in ("order", "status", "waiting for", "deadline"):
            stuck.add_column(column)
        for summary in report.stuck_workflows:
            stuck.add_row(
                summary.order_id, summary.status, summary.waiting_for or "", summary.deadline
            )
        parts.append(stuck)
    if not with_verdict:
        return Group(*parts, *warnings)
    return Group(*parts, *warnings, verdict(report))


def verdict(report: StatusReport) -> Text:
    """'healthy', or 'unhealthy: ' and the reasons (print with soft_wrap: one greppable line)."""
    return Text(report.verdict(), style="bold green" if report.healthy else "bold red")


def _retry_ladder(group: QueueGroup) -> QueueStats:
    """The retry tiers as one row (the JSON document lists them one by one)."""
    tiers = group.retries
    return QueueStats(
        f"{group.work.name}.retry.*",
        exists=all(tier.exists for tier in tiers),
        ready=sum(tier.ready for tier in tiers),
        unacked=sum(tier.unacked for tier in tiers),
        consumers=sum(tier.consumers for tier in tiers),
        publish_rate=round(sum(tier.publish_rate for tier in tiers), 2),
        deliver_rate=round(sum(tier.deliver_rate for tier in tiers), 2),
        ack_rate=round(sum(tier.ack_rate for tier in tiers), 2),
    )


def _queue_row(role: str, queue: QueueStats) -> list[str | Text]:
    if not queue.exists:
        missing = Text("missing", style="red" if role == "work" else "yellow")
        return [queue.name, missing, "", "", "", "", ""]
    consumers = Text(
        str(queue.consumers), style="red" if role == "work" and not queue.consumers else ""
    )
    ready = Text(str(queue.ready), style="red" if role == "dlq" and queue.ready else "")
    return [
        queue.name,
        ready,
        str(queue.unacked),
        consumers if role == "work" else str(queue.consumers),
        f"{queue.publish_rate:g}",
        f"{queue.deliver_rate:g}",
        f"{queue.ack_rate:g}",
    ]


def _lag_cells(lag: Lag, limits: Limits) -> list[str | Text]:
    style = "red" if lag.over(limits.max_lag_events, limits.max_lag_seconds) else ""
    position = "-" if lag.position is None else str(lag.position)
    events = f"{'≥' if lag.events_behind_is_lower_bound else ''}{lag.events_behind}"
    return [position, Text(events, style=style), Text(f"{lag.seconds_behind:.1f}", style=style)]
