"""`conveyor status` names connections a resource alarm blocks (issue 16)."""

from __future__ import annotations

from conveyor.operations.status import Limits, LogTail, blocked_connections, build_report
from messaging.topology import WorkQueue

COMMANDS = WorkQueue("orders.commands", (1.0,), 20)


def test_connections_blocked_by_an_alarm_make_the_status_unhealthy() -> None:
    connections = [
        {"name": "127.0.0.1:1 -> 127.0.0.1:5672", "state": "running"},
        {"name": "127.0.0.1:2 -> 127.0.0.1:5672", "state": "blocked"},
        {
            "name": "127.0.0.1:3 -> 127.0.0.1:5672",
            "state": "blocking",
            "client_properties": {"connection_name": "conveyor-gateway"},
        },
    ]
    blocked = blocked_connections(connections)
    assert blocked == ["127.0.0.1:2 -> 127.0.0.1:5672", "conveyor-gateway"]
    raw = {"name": "orders.commands", "consumers": 1, "messages": 0}
    queues = {name: dict(raw, name=name) for name in (COMMANDS.name, COMMANDS.dead_letter_queue)}
    queues.update({q.name: dict(raw, name=q.name) for q in COMMANDS.retries()})
    report = build_report(
        now=0.0,
        sources={},
        limits=Limits(10, 10.0),
        head_position=0,
        raw_queues=queues,
        command=COMMANDS,
        projection_queues={},
        gateway_checkpoint=None,
        progress={},
        tail=LogTail(),
        blocked_connections=blocked,
    )
    assert not report.healthy
    assert report.reasons == (
        "2 connection(s) blocked by a memory or disk alarm: "
        "127.0.0.1:2 -> 127.0.0.1:5672, conveyor-gateway",
    )
