"""The RabbitMQ management HTTP API, as conveyor's operator tools read it.

One small async client: queue statistics and connections of conveyor's vhost, and the few
administrative calls the chaos and bench harnesses make (creating and deleting a vhost, the
console's "Move messages"). The URL and credentials come from settings
(`CONVEYOR_MANAGEMENT_URL`, or the AMQP URL's host and credentials on the management port);
errors name the URL with its password redacted.
"""

from __future__ import annotations

import uuid
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from conveyor.eventstore.serialization import redact_url
from conveyor.settings import Settings

DEFAULT_PORT = 15672
DEFAULT_TLS_PORT = 15671
VHOST_TIMEOUT = 120.0  # deleting a vhost full of quorum queues takes a while


class ManagementApiError(RuntimeError):
    """The management API could not be reached or refused a request."""


def management_url(settings: Settings) -> str:
    """The configured management URL, or one derived from the AMQP URL."""
    if settings.management_url:
        return settings.management_url
    amqp = urlsplit(settings.amqp_url)
    tls = amqp.scheme == "amqps"
    userinfo, at, _ = amqp.netloc.rpartition("@")
    host = amqp.hostname or "127.0.0.1"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = DEFAULT_TLS_PORT if tls else DEFAULT_PORT
    netloc = f"{userinfo}{at}{host}:{port}"
    return urlunsplit(("https" if tls else "http", netloc, "/", "", ""))


def amqp_vhost(settings: Settings) -> str:
    """The vhost of the AMQP URL ("/" when the URL names none)."""
    path = urlsplit(settings.amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def move_messages_request(vhost: str, source: str, destination: str) -> tuple[str, dict[str, Any]]:
    """The PUT path and body of what the console's "Move messages" does: a dynamic shovel,
    named `move-…`, that deletes itself once it has moved the queue's current length."""
    name = f"move-{uuid.uuid4().hex[:8]}"
    quoted = quote(vhost, safe="")
    return f"/parameters/shovel/{quoted}/{name}", {
        "component": "shovel",
        "vhost": vhost,
        "name": name,
        "value": {
            "src-uri": "amqp:///" + quoted,
            "src-queue": source,
            "src-protocol": "amqp091",
            "src-prefetch-count": 1000,
            "src-delete-after": "queue-length",
            "dest-protocol": "amqp091",
            "dest-uri": "amqp:///" + quoted,
            "dest-add-forward-headers": False,
            "ack-mode": "on-confirm",
            "dest-queue": destination,
        },
    }


class ManagementApi:
    def __init__(
        self,
        url: str,
        vhost: str = "/",
        *,
        timeout: float = 30.0,
        verify: str | bool = True,
    ) -> None:
        parts = urlsplit(url)
        self.url = url
        self.vhost = vhost
        netloc = parts.hostname or "127.0.0.1"
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
        base = urlunsplit(parts._replace(netloc=netloc)).rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=f"{base}/api",
            auth=(unquote(parts.username or "guest"), unquote(parts.password or "guest")),
            timeout=timeout,
            verify=verify,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        verify: str | bool = str(settings.amqp_ca_file) if settings.amqp_ca_file else True
        return cls(management_url(settings), amqp_vhost(settings), verify=verify)

    def __repr__(self) -> str:
        return f"ManagementApi({redact_url(self.url)!r}, vhost={self.vhost!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.aclose()

    @property
    def _vhost_path(self) -> str:
        return quote(self.vhost, safe="")

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ManagementApiError(
                f"RabbitMQ management API at {redact_url(self.url)} is unreachable: "
                f"{exc or type(exc).__name__} (is the rabbitmq_management plugin enabled? "
                "set CONVEYOR_MANAGEMENT_URL)"
            ) from exc
        if response.status_code == 401:
            raise ManagementApiError(
                f"RabbitMQ management API at {redact_url(self.url)} refused the credentials"
            )
        if response.status_code >= 400:
            raise ManagementApiError(
                f"RabbitMQ management API {method} {path}: HTTP {response.status_code} "
                f"{response.text[:200]}"
            )
        return response.json() if response.content else None

    async def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes with their resource limits (needs the monitoring tag)."""
        result: list[dict[str, Any]] = await self.request("GET", "/nodes")
        return result

    async def queues(self) -> list[dict[str, Any]]:
        """Every queue of the vhost with its statistics (messages, consumers, rates)."""
        result: list[dict[str, Any]] = await self.request("GET", f"/queues/{self._vhost_path}")
        return result

    async def queue(self, name: str) -> dict[str, Any] | None:
        """One queue's statistics, or None when it does not exist."""
        try:
            result: dict[str, Any] = await self.request(
                "GET", f"/queues/{self._vhost_path}/{quote(name, safe='')}"
            )
        except ManagementApiError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise
        return result

    async def connections(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request(
            "GET", f"/vhosts/{self._vhost_path}/connections"
        )
        return result

    async def close_connection(self, name: str, reason: str = "closed by conveyor") -> None:
        await self.request(
            "DELETE",
            f"/connections/{quote(name, safe='')}",
            headers={"X-Reason": reason},
        )

    async def create_vhost(self, name: str, user: str) -> None:
        """Create vhost `name` and give `user` every permission on it."""
        quoted = quote(name, safe="")
        await self.request("PUT", f"/vhosts/{quoted}", json={}, timeout=VHOST_TIMEOUT)
        await self.request(
            "PUT",
            f"/permissions/{quoted}/{quote(user, safe='')}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
            timeout=VHOST_TIMEOUT,
        )

    async def delete_vhost(self, name: str) -> None:
        """Delete vhost `name` with its queues; one that does not exist is no error."""
        try:
            await self.request("DELETE", f"/vhosts/{quote(name, safe='')}", timeout=VHOST_TIMEOUT)
        except ManagementApiError as exc:
            if "HTTP 404" not in str(exc):
                raise

    async def move_messages(self, source: str, destination: str) -> None:
        """The console's "Move messages" from queue `source` to `destination` of the vhost
        (needs the rabbitmq_shovel plugin); returns once the shovel is declared."""
        path, body = move_messages_request(self.vhost, source, destination)
        await self.request("PUT", path, json=body)
