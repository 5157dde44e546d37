"""The cluster chaos smoke test: scenario 14 (SIGKILL the node leading orders.commands, then
restart it) with a small load, against the local 3-node cluster of `make cluster`.

Not part of the default run: three Erlang nodes are too heavy for `make test`. Run it on
demand with the cluster up:

    make cluster
    CONVEYOR_TEST_CLUSTER=1 .venv/bin/pytest -m cluster tests/integration/test_chaos_cluster.py
    make cluster-stop
"""

from __future__ import annotations

import os

import pytest

from chaos.scenarios import Sizes, run_scenario

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        os.environ.get("CONVEYOR_TEST_CLUSTER") != "1",
        reason="needs the local RabbitMQ cluster: `make cluster`, then CONVEYOR_TEST_CLUSTER=1",
    ),
]


async def test_killing_the_command_queue_leader_node_loses_and_duplicates_nothing() -> None:
    verdict = await run_scenario(14, Sizes(commands=340, kills=1))
    report = verdict.as_json()
    assert verdict.problems == [], report
    assert verdict.confirmed == verdict.sent > 200, report
    assert verdict.lost == 0, report
    assert verdict.duplicated == 0, report
    assert verdict.unexpected == 0, report
    assert verdict.read_models_equal_rebuild, report
    (fault,) = verdict.figures["faults"]
    assert fault["new_leader"] not in (None, fault["killed_node"]), report
    # Every worker whose node was killed came back by itself through another node, without
    # waiting for the killed one to return.
    assert verdict.figures["reconnects"], report
    for reconnect in verdict.figures["reconnects"]:
        assert reconnect["to"] != reconnect["lost"], report
        assert reconnect["after_s"] < fault["node_down_s"], report
