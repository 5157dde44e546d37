"""CONVEYOR_AMQP_URL with several nodes (messaging/cluster.py)."""

from __future__ import annotations

import pytest

from conveyor.operations.management import amqp_vhost, management_url
from conveyor.settings import Settings
from messaging.cluster import amqp_nodes


def test_one_host_is_the_url_itself() -> None:
    assert amqp_nodes("amqp://u:p@rabbit:5672/orders") == ["amqp://u:p@rabbit:5672/orders"]


def test_each_node_shares_user_vhost_and_query() -> None:
    url = "amqps://app:s%40cret@r1:5671,r2,[::1]:5673/prod%2Forders?heartbeat=30"
    assert amqp_nodes(url) == [
        "amqps://app:s%40cret@r1:5671/prod%2Forders?heartbeat=30",
        "amqps://app:s%40cret@r2/prod%2Forders?heartbeat=30",
        "amqps://app:s%40cret@[::1]:5673/prod%2Forders?heartbeat=30",
    ]


def test_an_empty_host_in_the_list_is_refused() -> None:
    with pytest.raises(ValueError, match="empty host"):
        amqp_nodes("amqp://u:p@r1:5672,,r3:5672/")


def test_operations_read_the_vhost_and_the_first_node_of_a_cluster_url() -> None:
    settings = Settings(amqp_url="amqp://ops:pw@r1:5672,r2:5672,r3:5672/orders")
    assert amqp_vhost(settings) == "orders"
    assert management_url(settings) == "http://ops:pw@r1:15672/"
