"""A shortened `make chaos` (chaos/): the same scenarios and checker with small loads, so a
regression that loses or duplicates a command fails CI. The broker-restart scenario (4)
and the memory alarm (10) stay out: they would stop or block the RabbitMQ other test runs
share."""

from __future__ import annotations

import pytest

from chaos.checker import Verdict
from chaos.scenarios import Sizes, run_scenario
from tests.rabbit import Management

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

SIZES = Sizes(commands=500, fuzz=100, concurrent=50, kills=2, workflows=30, workflow_timeout=5.0)


@pytest.mark.parametrize(
    "number",
    [
        pytest.param(1, id="1-sigkill-command-workers"),
        pytest.param(3, id="3-sigkill-projection-worker"),
        pytest.param(7, id="7-fuzzed-messages"),
        pytest.param(8, id="8-concurrent-commands-on-one-order"),
        pytest.param(17, id="17-sigkill-process-manager-during-workflows"),
        pytest.param(18, id="18-competing-inventory-workers"),
    ],
)
async def test_no_confirmed_command_is_lost_or_applied_twice(
    number: int, management: Management
) -> None:
    assert_clean(await run_scenario(number, SIZES))


async def test_a_projection_worker_sigkilled_over_mongodb_loses_nothing(
    management: Management, mongodb_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenario 3 as `CONVEYOR_READ_STORE=mongodb://… make chaos` runs it."""
    monkeypatch.setenv("CONVEYOR_READ_STORE", mongodb_url)
    verdict = await run_scenario(3, SIZES)
    assert verdict.read_store.startswith("MongoDB at mongodb://"), verdict.as_json()
    assert_clean(verdict)


def assert_clean(verdict: Verdict) -> None:
    report = verdict.as_json()
    assert verdict.confirmed > 0, report
    assert verdict.lost == 0, report
    assert verdict.duplicated == 0, report
    assert verdict.derived_lost == 0, report
    assert verdict.derived_duplicated == 0, report
    if "fulfilment" in verdict.figures:  # 17, 18: the workflow's invariants
        assert verdict.figures["fulfilment"]["problems"] == 0, report
    assert verdict.unexpected == 0, report
    assert verdict.read_models_equal_rebuild, report
    assert verdict.problems == [], report
