from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import httpx
import pytest

from tests.rabbit import AMQP_URL, MANAGEMENT_URL, Management, vhost_url

# The MongoDB server (SecantusDB, or CONVEYOR_TEST_MONGODB_URL) and a database per test.
pytest_plugins = ("tests.mongodb",)


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
