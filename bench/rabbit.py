"""The bench's own RabbitMQ vhost, made and removed through the management API
(conveyor/operations/management.py's ManagementApi)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from conveyor.operations.management import VHOST_TIMEOUT, ManagementApi

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_MANAGEMENT_URL = "http://guest:guest@127.0.0.1:15672/"

T = TypeVar("T")


class Management:
    """Synchronous calls for the bench's main thread: each runs the async client on an event
    loop of its own thread, so it also works from a signal handler while the figures'
    loop runs."""

    def __init__(self, url: str = DEFAULT_MANAGEMENT_URL) -> None:
        self.url = url

    def _call(self, operation: Callable[[ManagementApi], Awaitable[T]]) -> T:
        async def call() -> T:
            # Every call gets the long timeout vhost deletion needs.
            async with ManagementApi(self.url, timeout=VHOST_TIMEOUT) as api:
                return await operation(api)

        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, call()).result()

    def rabbitmq_version(self) -> str:
        overview = self._call(lambda api: api.request("GET", "/overview"))
        return f"{overview.get('rabbitmq_version')} (Erlang {overview.get('erlang_version')})"

    @contextmanager
    def vhost(self, amqp_url: str = DEFAULT_AMQP_URL) -> Iterator[str]:
        """A fresh vhost for one bench run, deleted afterwards whatever happens; yields
        the AMQP URL that points into it."""
        name = f"conveyor-bench-{uuid.uuid4().hex[:10]}"
        user = urlsplit(amqp_url).username or "guest"
        url = vhost_url(name, amqp_url)
        try:
            self._call(lambda api: api.create_vhost(name, user))
            yield url
        finally:
            self.delete_vhost_of(url)

    def delete_vhost_of(self, amqp_url: str) -> None:
        vhost = unquote(urlsplit(amqp_url).path[1:])
        if not vhost.startswith("conveyor-bench-"):
            raise ValueError(f"refusing to delete vhost {vhost!r}: not one the bench made")
        self._call(lambda api: api.delete_vhost(vhost))


def vhost_url(vhost: str, base: str = DEFAULT_AMQP_URL) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
