from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import httpx
import pytest

from tests.rabbit import AMQP_URL, MANAGEMENT_URL, Management, vhost_url

# The whole-suite watchdog; the MongoDB server (SecantusDB, or CONVEYOR_TEST_MONGODB_URL)
# and a database per test.
pytest_plugins = ["tests.watchdog", "tests.mongodb"]

# Fixtures that put a test on the broker: the topology it declares is deleted when it ends.
BROKER_FIXTURES = frozenset({"amqp_url", "test_vhost"})


@pytest.fixture(scope="session")
def management() -> Management:
    api = Management()
    try:
        api.get("/overview")
    except httpx.HTTPError as exc:
        pytest.fail(
            f"RabbitMQ management API at {MANAGEMENT_URL} is unreachable ({exc}); these tests "
            "need the real broker: run `make test`, which starts it and enables the plugins"
        )
    return api


@pytest.fixture(scope="session")
def test_vhost(management: Management) -> Iterator[str]:
    """One vhost per test run, so tests never touch the queues of a running conveyor."""
    vhost = management.create_vhost(urlsplit(AMQP_URL).username or "guest")
    yield vhost
    management.delete(f"/vhosts/{quote(vhost, safe='')}")


@pytest.fixture(scope="session")
def amqp_url(test_vhost: str) -> str:
    return vhost_url(test_vhost)


class QueueCount:
    """How many queues were alive in the test vhost, at most, over the run (shown at the end)."""

    peak = 0
    peak_test = ""


@pytest.fixture(autouse=True)
def _delete_declared_topology(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test deletes the queues and exchanges it declared when it ends.

    Every quorum queue is a Raft group holding file handles: on a broker started with an
    open-files limit of 1024 (Debian's default), a few hundred left alive at once make
    RabbitMQ 3.10 stop answering new connections and vhost creation. Autouse fixtures are
    set up first and so torn down last: the test's workers have stopped by then.
    """
    if not BROKER_FIXTURES & set(request.fixturenames):
        yield
        return
    management: Management = request.getfixturevalue("management")
    vhost: str = request.getfixturevalue("test_vhost")
    queues, exchanges = management.queue_names(vhost), management.exchange_names(vhost)
    yield
    alive = management.queue_names(vhost)
    # On the test's report, so the controller of a parallel run (pytest-xdist) sees it too.
    request.node.user_properties.append(("queues_alive", len(alive)))
    for name in alive - queues:
        management.delete_queue(vhost, name)
    for name in management.exchange_names(vhost) - exchanges:
        management.delete_exchange(vhost, name)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, value in report.user_properties:
        if name == "queues_alive" and value > QueueCount.peak:
            QueueCount.peak, QueueCount.peak_test = value, report.nodeid


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if QueueCount.peak:
        terminalreporter.write_line(
            f"queues alive in the test vhost at once, at most: {QueueCount.peak} "
            f"(at the end of {QueueCount.peak_test})"
        )
