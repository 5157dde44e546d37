"""Helpers for tests against the real RabbitMQ: an isolated vhost, publishing like the
management console does, and reading queues through the management HTTP API."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import httpx

from conveyor.operations.management import move_messages_request

AMQP_URL = os.environ.get("CONVEYOR_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MANAGEMENT_URL = os.environ.get(
    "CONVEYOR_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672/"
)


class Management:
    def __init__(self, url: str = MANAGEMENT_URL) -> None:
        parts = urlsplit(url)
        self.base = urlunsplit(parts._replace(netloc=parts.hostname + f":{parts.port or 15672}"))
        self.client = httpx.Client(
            base_url=self.base.rstrip("/") + "/api",
            auth=(parts.username or "guest", parts.password or "guest"),
            # Bounded: a broker in trouble fails the test that asked, instead of hanging it.
            timeout=30,
        )

    def get(self, path: str) -> Any:
        response = self.client.get(path)
        response.raise_for_status()
        return response.json()

    def put(self, path: str, body: dict[str, Any] | None = None) -> None:
        self.client.put(path, json=body or {}).raise_for_status()

    def delete(self, path: str) -> None:
        response = self.client.delete(path)
        if response.status_code != 404:
            response.raise_for_status()

    def create_vhost(self, user: str) -> str:
        vhost = f"conveyor-test-{uuid.uuid4().hex[:10]}"
        self.put(f"/vhosts/{quote(vhost, safe='')}")
        self.put(
            f"/permissions/{quote(vhost, safe='')}/{quote(user, safe='')}",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )
        return vhost

    def queue_names(self, vhost: str) -> set[str]:
        return {q["name"] for q in self.get(f"/queues/{quote(vhost, safe='')}?columns=name")}

    def exchange_names(self, vhost: str) -> set[str]:
        exchanges = self.get(f"/exchanges/{quote(vhost, safe='')}?columns=name")
        return {e["name"] for e in exchanges if e["name"] and not e["name"].startswith("amq.")}

    def delete_queue(self, vhost: str, name: str) -> None:
        self.delete(f"/queues/{quote(vhost, safe='')}/{quote(name, safe='')}")

    def delete_exchange(self, vhost: str, name: str) -> None:
        self.delete(f"/exchanges/{quote(vhost, safe='')}/{quote(name, safe='')}")

    def queue(self, vhost: str, name: str) -> dict[str, Any]:
        return self.get(f"/queues/{quote(vhost, safe='')}/{quote(name, safe='')}")

    def peek(self, vhost: str, queue: str, count: int = 100) -> list[dict[str, Any]]:
        """Messages of a queue without consuming them (requeued), as the console shows them."""
        response = self.client.post(
            f"/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}/get",
            json={"count": count, "ackmode": "ack_requeue_true", "encoding": "auto"},
        )
        response.raise_for_status()
        return response.json()

    def publish(
        self, vhost: str, queue: str, body: bytes, properties: dict[str, Any] | None = None
    ) -> None:
        """Publish exactly as the console's "Publish message" on a queue's page does: through
        the default exchange, with only the properties given (no generated message_id)."""
        response = self.client.post(
            f"/exchanges/{quote(vhost, safe='')}/amq.default/publish",
            json={
                "properties": properties or {},
                "routing_key": queue,
                "payload": base64.b64encode(body).decode(),
                "payload_encoding": "base64",
            },
        )
        response.raise_for_status()
        if not response.json()["routed"]:
            raise AssertionError(f"message to {queue} was not routed")

    def move_messages(self, vhost: str, source: str, destination: str) -> None:
        """What the console's "Move messages" does: a dynamic shovel that deletes itself
        once it has moved the queue's current length."""
        self.put(*move_messages_request(vhost, source, destination))


def vhost_url(vhost: str, base: str = AMQP_URL) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


async def publish(
    amqp_url: str,
    queue: str,
    body: bytes | dict[str, Any],
    **properties: Any,
) -> None:
    """Publish through the default exchange with a confirm: what "Publish message" on a
    queue's page in the console does."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        properties.setdefault("content_type", "application/json")
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties),
            routing_key=queue,
        )


async def publish_many(amqp_url: str, queue: str, bodies: list[dict[str, Any]]) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await asyncio.gather(
            *(
                channel.default_exchange.publish(
                    aio_pika.Message(
                        json.dumps(body).encode(),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=queue,
                )
                for body in bodies
            )
        )


async def eventually(
    check: Callable[[], Any], *, within: float = 20.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll `check` (sync or async) until it returns a truthy value."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for {what or check}: last {last!r}")


async def queue_depth(amqp_url: str, queue: str) -> int:
    """Ready messages in a queue, straight from the broker (the management API's numbers
    lag by its statistics interval)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0
