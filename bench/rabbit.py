"""The bench's own RabbitMQ vhost, made and removed through the management API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_MANAGEMENT_URL = "http://guest:guest@127.0.0.1:15672/"


class Management:
    def __init__(self, url: str = DEFAULT_MANAGEMENT_URL) -> None:
        parts = urlsplit(url)
        base = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port or 15672}"))
        self.client = httpx.Client(
            base_url=base.rstrip("/") + "/api",
            auth=(parts.username or "guest", parts.password or "guest"),
            timeout=120,  # deleting a vhost full of quorum queues takes a while
        )

    def get(self, path: str) -> Any:
        response = self.client.get(path)
        response.raise_for_status()
        return response.json()

    def rabbitmq_version(self) -> str:
        overview = self.get("/overview")
        return f"{overview.get('rabbitmq_version')} (Erlang {overview.get('erlang_version')})"

    @contextmanager
    def vhost(self, amqp_url: str = DEFAULT_AMQP_URL) -> Iterator[str]:
        """A fresh vhost for one bench run, deleted afterwards whatever happens; yields
        the AMQP URL that points into it."""
        name = f"conveyor-bench-{uuid.uuid4().hex[:10]}"
        quoted = quote(name, safe="")
        user = urlsplit(amqp_url).username or "guest"
        self.client.put(f"/vhosts/{quoted}", json={}).raise_for_status()
        url = vhost_url(name, amqp_url)
        try:
            self.client.put(
                f"/permissions/{quoted}/{quote(user, safe='')}",
                json={"configure": ".*", "write": ".*", "read": ".*"},
            ).raise_for_status()
            yield url
        finally:
            self.delete_vhost_of(url)

    def delete_vhost_of(self, amqp_url: str) -> None:
        vhost = urlsplit(amqp_url).path[1:]  # still quoted, as the API path wants it
        if not unquote(vhost).startswith("conveyor-bench-"):
            raise ValueError(f"refusing to delete vhost {vhost!r}: not one the bench made")
        response = self.client.delete(f"/vhosts/{vhost}")
        if response.status_code not in (204, 404):
            response.raise_for_status()


def vhost_url(vhost: str, base: str = DEFAULT_AMQP_URL) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
