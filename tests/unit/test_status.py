"""`conveyor status` as pure functions: raw statistics and positions in, report and verdict out."""

from __future__ import annotations

from typing import Any

from conveyor.operations.status import (
    Limits,
    LogEntry,
    LogTail,
    build_report,
    lag_at,
    queue_stats,
)
from conveyor.readmodels.progress import POSITION_HEADER, ProgressTracker, position_of
from messaging.topology import WorkQueue

NOW = 1_800_000_000.0
LIMITS = Limits(max_lag_events=2, max_lag_seconds=30.0)
COMMANDS = WorkQueue("orders.commands", (1.0, 5.0), 20)
EMPTY = LogTail()
PROJECTION = WorkQueue("projections.order_summary", (1.0,), 20, binding_key="orders.#")


def raw(ready: int = 0, unacked: int = 0, consumers: int = 1, **stats: float) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "consumers": consumers,
    }
    if stats:
        answer["message_stats"] = {f"{k}_details": {"rate": v} for k, v in stats.items()}
    return answer


def healthy_queues() -> dict[str, dict[str, Any] | None]:
    names = [q.name for work in (COMMANDS, PROJECTION) for q in work.all_queues()]
    return {
        name: raw(consumers=0 if ".retry." in name or name.endswith(".dlq") else 1)
        for name in names
    }


def report(
    *,
    queues: dict[str, dict[str, Any] | None] | None = None,
    gateway: dict[str, Any] | None = None,
    progress: dict[str, tuple[int, float]] | None = None,
    tail: LogTail = EMPTY,
) -> Any:
    return build_report(
        now=NOW,
        sources={"rabbitmq": "amqp://guest:***@host/"},
        limits=LIMITS,
        head_position=max((e.position for e in tail.entries), default=0),
        raw_queues=healthy_queues() if queues is None else queues,
        command=COMMANDS,
        projection_queues={"order_summary": PROJECTION},
        gateway_checkpoint=gateway,
        progress=progress or {},
        tail=tail,
    )


def test_an_idle_queue_without_message_stats_has_zero_rates() -> None:
    idle = queue_stats("q", raw(ready=2, unacked=1, consumers=3))
    assert (idle.messages, idle.consumers, idle.publish_rate, idle.ack_rate) == (3, 3, 0.0, 0.0)
    busy = queue_stats("q", raw(publish=12.345, deliver_get=10.0, ack=9.5))
    assert (busy.publish_rate, busy.deliver_rate, busy.ack_rate) == (12.35, 10.0, 9.5)
    assert queue_stats("q", None).exists is False


def test_lag_counts_what_follows_the_position_and_dates_the_oldest() -> None:
    tail = LogTail(
        (
            LogEntry(11, NOW - 40, integration=True),
            LogEntry(12, NOW - 20, integration=False),  # a foreign event: not for projections
            LogEntry(13, NOW - 5, integration=True),
        )
    )
    assert lag_at(10, tail, NOW).events_behind == 3
    assert lag_at(10, tail, NOW).seconds_behind == 40
    assert lag_at(11, tail, NOW, integration_only=True).events_behind == 1
    assert lag_at(11, tail, NOW, integration_only=True).seconds_behind == 5
    # a projection counts only the events its aggregates send it
    fed = LogTail(
        (
            LogEntry(11, NOW - 40, integration=True, read_models=("order_summary",)),
            LogEntry(12, NOW - 20, integration=True, read_models=("stock_levels",)),
        )
    )
    assert lag_at(0, fed, NOW, integration_only=True, projection="stock_levels").events_behind == 1
    assert (
        lag_at(12, fed, NOW, integration_only=True, projection="order_summary").seconds_behind == 0
    )
    caught_up = lag_at(13, tail, NOW)
    assert (caught_up.events_behind, caught_up.seconds_behind) == (0, 0.0)
    assert lag_at(None, LogTail(tail.entries, complete=False), NOW).events_behind_is_lower_bound


def test_a_caught_up_system_with_consumers_is_healthy() -> None:
    tail = LogTail((LogEntry(5, NOW - 1, integration=True),))
    result = report(
        gateway={"position": 5, "expires_at": NOW + 5},
        progress={"order_summary": (5, NOW)},
        tail=tail,
    )
    assert result.healthy
    assert result.exit_code == 0
    assert result.verdict() == "healthy"
    document = result.as_json()
    assert list(document) == [
        "healthy",
        "exit_code",
        "reasons",
        "warnings",
        "checked_at",
        "sources",
        "limits",
        "head_position",
        "queues",
        "dead_letters",
        "gateway",
        "projections",
        "workflows",
    ]
    assert document["gateway"]["lease_active"] is True
    assert document["projections"]["order_summary"]["position"] == 5


def test_every_reason_is_named() -> None:
    queues = healthy_queues()
    queues["orders.commands"] = raw(ready=4, consumers=0)
    queues["projections.order_summary"] = None
    queues["projections.order_summary.dlq"] = raw(ready=3, consumers=0)
    tail = LogTail(
        tuple(
            LogEntry(p, NOW - 90, integration=True, read_models=("order_summary",))
            for p in range(1, 5)
        )
    )
    result = report(queues=queues, progress={"order_summary": (3, NOW)}, tail=tail)
    assert result.exit_code == 1
    assert result.reasons == (
        "no consumer on orders.commands",
        "queue projections.order_summary does not exist (no worker declared it yet)",
        "gateway is 4 events / 90.0s behind (limits 2 events, 30s)",
        "projection order_summary is 1 event / 90.0s behind (limits 2 events, 30s)",
        "3 messages in projections.order_summary.dlq",
    )
    assert result.dead_letters == 3


def test_pending_messages_include_the_retry_ladder() -> None:
    queues = healthy_queues()
    queues["projections.order_summary"] = raw(ready=2, unacked=1)
    queues["projections.order_summary.retry.1000ms"] = raw(ready=4, consumers=0)
    assert report(queues=queues).as_json()["projections"]["order_summary"]["pending_messages"] == 7


def test_the_position_header_is_read_leniently_and_kept_as_a_maximum() -> None:
    assert position_of({POSITION_HEADER: 42}) == 42
    assert position_of({POSITION_HEADER: "42"}) == 42
    assert position_of({POSITION_HEADER: "x"}) is None
    assert position_of({POSITION_HEADER: True}) is None
    assert position_of(None) is None
    tracker = ProgressTracker("order_summary")
    for position in (3, 9, None, 4):
        tracker.observe(position)
    assert tracker.position == 9


def test_a_broker_below_the_recommended_open_files_limit_is_a_warning_not_unhealthy() -> None:
    nodes = [{"name": "rabbit@a", "fd_total": 1024}, {"name": "rabbit@b", "fd_total": 65536}]
    checked = build_report(
        now=NOW,
        sources={"rabbitmq": "amqp://guest:***@host/"},
        limits=LIMITS,
        head_position=0,
        raw_queues=healthy_queues(),
        command=COMMANDS,
        projection_queues={"order_summary": PROJECTION},
        gateway_checkpoint=None,
        progress={},
        tail=EMPTY,
        nodes=nodes,
    )
    assert checked.warnings == (
        "RabbitMQ node rabbit@a may open only 1024 files (fd_total); its production checklist "
        "asks for at least 50000: raise the broker's open-files limit (LimitNOFILE= in its "
        "systemd unit, or `ulimit -n 65536` before rabbitmq-server) and restart it",
    )
    assert checked.as_json()["warnings"] == list(checked.warnings)
    without_nodes = report(queues=healthy_queues())
    assert checked.reasons == without_nodes.reasons  # the verdict does not change
    assert without_nodes.warnings == ()  # no node answers (no monitoring tag): nothing to say
