"""Connecting to a RabbitMQ cluster: several nodes in one AMQP URL, and a robust connection
that moves to another node when its own goes away.

The URL names the nodes MongoDB's way, comma-separated in the host part, sharing one user,
vhost and query: `amqp://user:pass@host1:5672,host2:5672,host3:5672/vhost` (a host without
a port gets the scheme's default). A URL with one host behaves exactly as before.

aio-pika, and FastStream over it, connect to one host per connection (aio-pika issue #141:
its maintainers point to DNS or a load balancer). So a robust connection here starts on the
first node that answers and, whenever its connection closes or an attempt fails, makes the
next attempt on the next node in turn. Quorum queues are reachable through any node, so a
process only needs *a* surviving node: consumers are re-registered there by aio-pika's
recovery, whichever node then leads the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import TimeoutType, UnderlayConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from faststream.rabbit import RabbitBroker
from yarl import URL

from messaging.connection import ClosingRobustConnection

logger = logging.getLogger("conveyor.cluster")

PROBE_TIMEOUT = 10.0
"""Seconds one node may take to answer at start-up, when no connect timeout is set (an
unreachable host can otherwise hold the first attempt for the OS's TCP timeout)."""


def amqp_nodes(url: str) -> list[str]:
    """One URL per node of `url` (the URL itself when it names one host)."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if "," not in hosts:
        return [url]
    nodes = []
    for host in hosts.split(","):
        if not host.strip():
            raise ValueError(
                "CONVEYOR_AMQP_URL: an empty host in the list of nodes "
                "(expected amqp://user:pass@host1:port,host2:port/vhost)"
            )
        nodes.append(urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host.strip()}")))
    return nodes


class FailoverConnection(ClosingRobustConnection):
    """A RobustConnection over several nodes: each time the connection to a node closes, or
    an attempt to open one fails, the next attempt goes to the next node in turn. At start
    it takes the first node that answers, and fails only when none does."""

    def __init__(
        self,
        url: URL,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        nodes: Sequence[str],
        **kwargs: Any,
    ) -> None:
        super().__init__(url, loop=loop, **kwargs)
        # Every node gets the query the first node's URL was given (FastStream and aio-pika
        # put their own parameters there), only its host and port differ.
        self.node_urls = [_on_node(self.url, URL(node)) for node in nodes] or [self.url]
        self.node_index = 0
        # aio-pika waits reconnect_interval after every attempt, and after every connect
        # before it reacts to a loss: over several nodes, a whole round takes that long, so
        # a surviving node is tried within a second or two rather than after 5 s.
        self.reconnect_interval = self.reconnect_interval / len(self.node_urls)
        self._probed = False
        self._lost_at: float | None = None
        self._lost_node = ""

    def use_next_node(self) -> None:
        self.node_index = (self.node_index + 1) % len(self.node_urls)
        self.url = self.node_urls[self.node_index]

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        # Called for a lost connection and for a failed attempt alike (aio-pika's
        # UnderlayConnection.connect): either way, try another node next.
        lost = self._lost_at is None and self.connected.is_set() and not self._close_called
        if lost:  # not a failed attempt (aio-pika logs those) nor our own close
            self._lost_at, self._lost_node = time.monotonic(), _node(self.url)
        if len(self.node_urls) > 1:
            self.use_next_node()
        if lost:
            logger.warning(
                "RabbitMQ connection to node %s lost; next attempt on %s",
                self._lost_node,
                _node(self.url),
            )
        await super()._on_connection_close(closing)

    async def _on_connected(self) -> None:
        await super()._on_connected()  # channels and consumers restored
        if self._lost_at is None:
            logger.info("connected to RabbitMQ node %s", _node(self.url))
            return
        # The line the cluster chaos scenarios read: how long this process was cut off.
        logger.warning(
            "reconnected to RabbitMQ node %s %.2fs after losing node %s",
            _node(self.url),
            time.monotonic() - self._lost_at,
            self._lost_node,
        )
        self._lost_at, self._lost_node = None, ""

    async def connect(self, timeout: TimeoutType = None) -> None:  # noqa: ASYNC109 (aio-pika's)
        if not self._probed and len(self.node_urls) > 1:
            self._probed = True
            await self._find_answering_node(timeout)
        await super().connect(timeout)

    async def _find_answering_node(self, connect_timeout: TimeoutType) -> None:
        """Point at the first node that completes an AMQP handshake. RobustConnection's
        fail-fast start gives up on the first failed attempt, before any other node could
        be tried."""
        last_error: BaseException | None = None
        for _ in self.node_urls:
            try:
                probe = await UnderlayConnection.make_connection(
                    self.url, timeout=connect_timeout or PROBE_TIMEOUT, **self.kwargs
                )
            except (*CONNECTION_EXCEPTIONS, TimeoutError) as error:
                last_error = error
                self.use_next_node()
                continue
            await probe.close()
            return
        assert last_error is not None
        raise last_error


def _node(url: URL) -> str:
    return f"{url.host}:{url.port}"


def _on_node(template: URL, node: URL) -> URL:
    return template.with_host(node.host or "localhost").with_port(node.port)


def failover_broker(url: str, **options: Any) -> RabbitBroker:
    """A RabbitBroker for `url`, failing over between its nodes when it names several, on a
    connection that never outlives a cancelled connect (messaging/connection.py)."""
    nodes = amqp_nodes(url)
    broker = RabbitBroker(nodes[0], **options)
    # RabbitBroker hands these keywords to aio_pika.connect_robust, which accepts a
    # connection class; RabbitBroker's own signature has no place for one.
    broker._connection_kwargs["connection_class"] = _connection_class(nodes)
    return broker


def _connection_class(nodes: Sequence[str]) -> Any:
    if len(nodes) > 1:
        return partial(FailoverConnection, nodes=nodes)
    return ClosingRobustConnection


async def connect_robust_any(url: str, **options: Any) -> aio_pika.abc.AbstractRobustConnection:
    """aio_pika.connect_robust for `url`, failing over between its nodes: for producers."""
    nodes = amqp_nodes(url)
    options["connection_class"] = _connection_class(nodes)
    connection: aio_pika.abc.AbstractRobustConnection = await aio_pika.connect_robust(
        nodes[0], **options
    )
    return connection


async def connect_any(url: str, **options: Any) -> aio_pika.abc.AbstractConnection:
    """A plain (not robust) connection to the first node of `url` that answers."""
    last_error: BaseException | None = None
    for node in amqp_nodes(url):
        try:
            connection: aio_pika.abc.AbstractConnection = await aio_pika.connect(node, **options)
            return connection
        except (*CONNECTION_EXCEPTIONS, TimeoutError) as error:
            last_error = error
    assert last_error is not None
    raise last_error
