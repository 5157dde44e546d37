"""Secure defaults against the real RabbitMQ: the least-privilege users of
deploy/rabbitmq/definitions.json load and behave as documented, and no password shows up in
what conveyor prints or logs when a connection fails."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import json
import logging
import os
import re
import secrets
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote, urlsplit

import aio_pika
import httpx
import pytest
from aiormq.exceptions import ChannelAccessRefused, ChannelClosed, ProbableAuthenticationError

from conveyor.bootstrap import build_broker, declare_topology
from conveyor.settings import Settings
from gateway.relay import EVENTS
from tests.rabbit import AMQP_URL, MANAGEMENT_URL, Management, eventually

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
CONVEYOR = Path(sys.executable).parent / "conveyor"
USERS = ("conveyor-admin", "conveyor-publisher", "conveyor-worker", "conveyor-operator")


def make_secrets_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_secrets", ROOT / "deploy/make_secrets.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------- the definitions file


def test_the_definitions_file_declares_least_privilege_users_without_passwords() -> None:
    definitions = json.loads(DEFINITIONS.read_text())
    users = {user["name"]: user for user in definitions["users"]}
    assert set(users) == set(USERS)  # and no guest
    assert all(user["password_hash"] == "" for user in users.values())  # no secrets in git
    assert users["conveyor-admin"]["tags"] == ["administrator"]
    assert users["conveyor-publisher"]["tags"] == []
    assert users["conveyor-worker"]["tags"] == []
    assert users["conveyor-operator"]["tags"] == ["monitoring", "policymaker"]
    permissions = {p["user"]: p for p in definitions["permissions"]}
    assert {p["vhost"] for p in permissions.values()} == {"/"}
    assert permissions["conveyor-publisher"] | {"user": "", "vhost": ""} == {
        "user": "",
        "vhost": "",
        "configure": "^$",
        "write": r"^amq\.default$",
        "read": "^$",
    }
    assert permissions["conveyor-operator"]["configure"] == "^$"
    assert permissions["conveyor-operator"]["write"] == "^$"
    assert definitions["queues"] == definitions["exchanges"] == []  # workers declare them


def test_rendered_password_hashes_are_salted_sha256() -> None:
    """The layout of rabbit_password_hashing_sha256: base64(4-byte salt + sha256(salt +
    password)). That RabbitMQ accepts them is proved by the logins in the broker test."""
    make_secrets = make_secrets_module()
    raw = base64.b64decode(make_secrets.rabbit_password_hash("test12"))
    salt, digest = raw[:4], raw[4:]
    assert digest == hashlib.sha256(salt + b"test12").digest()
    assert make_secrets.rabbit_password_hash("test12") != make_secrets.rabbit_password_hash(
        "test12"
    )  # a fresh salt each time


def test_make_secrets_writes_every_file_compose_needs(tmp_path: Path) -> None:
    make_secrets = make_secrets_module()
    assert make_secrets.main(["--out", str(tmp_path / "secrets")]) == 0
    out = tmp_path / "secrets"
    assert oct(out.stat().st_mode & 0o777) == "0o700"
    first = (out / "conveyor-worker.password").read_text()
    make_secrets.main(["--out", str(out)])
    assert (out / "conveyor-worker.password").read_text() == first  # kept unless --rotate
    compose = (ROOT / "docker-compose.yml").read_text()
    for name in ("rabbitmq-definitions.json", "conveyor-amqp-url", "conveyor-read-store"):
        assert (out / name).is_file()
        assert f"./deploy/secrets/{name}" in compose
    url = (out / "conveyor-amqp-url").read_text().strip()
    assert urlsplit(url).username == "conveyor-worker"
    rendered = json.loads((out / "rabbitmq-definitions.json").read_text())
    assert all(len(user["password_hash"]) == 48 for user in rendered["users"])
    # no credentials in the compose file: no user:password@ in a URL, no *_PASSWORD value
    assert not re.search(r"://[^/\s:@]+:[^@\s]+@", compose)
    assert not re.search(r"_PASS(WORD)?:", compose)


# --------------------------------------------------------------- loaded into RabbitMQ


class LoadedDefinitions:
    """deploy/rabbitmq/definitions.json imported under throwaway names: its users become
    <name>-test-<run>, its vhost / becomes a fresh vhost; removed again afterwards."""

    def __init__(self, management: Management) -> None:
        self.management = management
        self.run = uuid.uuid4().hex[:8]
        self.vhost = f"conveyor-security-{self.run}"
        self.users = {name: f"{name}-test-{self.run}" for name in USERS}
        self.passwords = {name: secrets.token_urlsafe(18) for name in USERS}

    def definitions(self, *, with_passwords: bool) -> dict[str, Any]:
        definitions = json.loads(DEFINITIONS.read_text())
        for user in definitions["users"]:
            user["name"] = self.users[user["name"]]
        for permission in definitions["permissions"]:
            assert permission["vhost"] == "/"
            permission["vhost"] = self.vhost
            permission["user"] = self.users[permission["user"]]
        definitions["vhosts"] = [{"name": self.vhost}]
        if with_passwords:
            by_test_name = {self.users[name]: pw for name, pw in self.passwords.items()}
            definitions = make_secrets_module().render_definitions(definitions, by_test_name)
        return definitions

    def load(self, *, with_passwords: bool) -> None:
        response = self.management.client.post(
            "/definitions", json=self.definitions(with_passwords=with_passwords)
        )
        assert response.status_code in (201, 204), response.text

    def amqp_url(self, user: str) -> str:
        parts = urlsplit(AMQP_URL)
        netloc = f"{quote(self.users[user])}:{quote(self.passwords[user], safe='')}@"
        netloc += f"{parts.hostname}:{parts.port or 5672}"
        return parts._replace(netloc=netloc, path="/" + quote(self.vhost, safe="")).geturl()

    def http(self, user: str) -> httpx.Client:
        return httpx.Client(
            base_url=Management(MANAGEMENT_URL).base.rstrip("/") + "/api",
            auth=(self.users[user], self.passwords[user]),
            timeout=30,
        )

    def remove(self) -> None:
        for name in self.users.values():
            self.management.delete(f"/users/{quote(name, safe='')}")
        self.management.delete(f"/vhosts/{quote(self.vhost, safe='')}")


@pytest.fixture
def loaded(management: Management) -> Iterator[LoadedDefinitions]:
    definitions = LoadedDefinitions(management)
    try:
        yield definitions
    finally:
        definitions.remove()


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    return None


async def _refused(action: Any) -> str:
    with pytest.raises((ChannelAccessRefused, ChannelClosed)) as raised:
        await action
    assert "ACCESS_REFUSED" in str(raised.value)
    return str(raised.value)


@pytest.mark.rabbitmq
async def test_the_definitions_load_and_each_user_can_do_only_its_job(
    loaded: LoadedDefinitions, management: Management
) -> None:
    # As checked in: the users exist but nobody can log in (no password at all).
    loaded.load(with_passwords=False)
    for password in ("", "guest", loaded.passwords["conveyor-worker"]):
        url = loaded.amqp_url("conveyor-worker").replace(
            quote(loaded.passwords["conveyor-worker"], safe=""), quote(password, safe="")
        )
        with pytest.raises(ProbableAuthenticationError):
            await aio_pika.connect(url)

    loaded.load(with_passwords=True)
    for name in USERS:
        user = management.get(f"/users/{quote(loaded.users[name], safe='')}")
        expected = {"conveyor-admin": ["administrator"]}.get(name, [])
        if name == "conveyor-operator":
            expected = ["monitoring", "policymaker"]
        assert sorted(user["tags"]) == expected

    vhost = quote(loaded.vhost, safe="")
    settings = Settings(amqp_url=loaded.amqp_url("conveyor-worker"), retry_delays=(1.0,))

    # The worker declares conveyor's topology and nothing else.
    broker = build_broker(settings)
    async with broker:
        await broker.connect()
        await declare_topology(settings, broker, commands=True, events=False)
        await broker.declare_exchange(EVENTS)
    worker = await aio_pika.connect(loaded.amqp_url("conveyor-worker"))
    async with worker:
        channel = await worker.channel()
        await _refused(channel.declare_queue("someone-elses-queue", durable=True))

    # The publisher publishes commands through the default exchange, and that is all.
    publisher = await aio_pika.connect(loaded.amqp_url("conveyor-publisher"))
    async with publisher:
        channel = await publisher.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(b'{"type": "ConfirmOrder", "order_id": "o-1"}', message_id="c-1"),
            routing_key=settings.command_queue,
        )
        commands = await channel.get_queue(settings.command_queue, ensure=False)
        await _refused(commands.consume(_ignore))
    publisher = await aio_pika.connect(loaded.amqp_url("conveyor-publisher"))
    async with publisher:
        await _refused((await publisher.channel()).declare_queue("mine", exclusive=True))
    publisher = await aio_pika.connect(loaded.amqp_url("conveyor-publisher"))
    async with publisher:
        channel = await publisher.channel(publisher_confirms=True)
        events = await channel.get_exchange(EVENTS.name, ensure=False)
        await _refused(events.publish(aio_pika.Message(b"{}"), routing_key="orders.created"))
    with loaded.http("conveyor-publisher") as http:
        assert http.get("/overview").status_code == 401  # no management access

    # The operator reads the DLQ and re-drives it with a shovel, as the console does.
    admin = await aio_pika.connect(loaded.amqp_url("conveyor-admin"))
    async with admin:
        channel = await admin.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(b"dead", message_id="d-1"),
            routing_key=f"{settings.command_queue}.dlq",
        )
    with loaded.http("conveyor-operator") as http:
        queues = http.get(f"/queues/{vhost}")
        assert queues.status_code == 200
        peek = {"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"}
        dlq = quote(f"{settings.command_queue}.dlq", safe="")
        assert http.post(f"/queues/{vhost}/{dlq}/get", json=peek).status_code == 200
        work = quote(settings.command_queue, safe="")
        assert http.post(f"/queues/{vhost}/{work}/get", json=peek).status_code != 200
        shovel = http.put(
            f"/parameters/shovel/{vhost}/redrive",
            json={
                "component": "shovel",
                "vhost": loaded.vhost,
                "name": "redrive",
                "value": {
                    "src-uri": f"amqp:///{vhost}",
                    "src-queue": f"{settings.command_queue}.dlq",
                    "src-protocol": "amqp091",
                    "src-delete-after": "queue-length",
                    "dest-protocol": "amqp091",
                    "dest-uri": f"amqp:///{vhost}",
                    "dest-queue": settings.command_queue,
                    "ack-mode": "on-confirm",
                },
            },
        )
        assert shovel.status_code in (201, 204), shovel.text
        assert http.delete(f"/vhosts/{vhost}").status_code in (401, 403)  # not an admin

    async def depths() -> tuple[int, int]:
        connection = await aio_pika.connect(loaded.amqp_url("conveyor-admin"))
        async with connection:
            channel = await connection.channel()
            result = []
            for name in (settings.command_queue, f"{settings.command_queue}.dlq"):
                queue = await channel.declare_queue(name, passive=True)
                result.append(queue.declaration_result.message_count or 0)
            return result[0], result[1]

    async def moved() -> bool:
        return await depths() == (2, 0)

    await eventually(moved, within=15, what="the shovel to move the dead letter")


# --------------------------------------------------------------- no passwords in output

PASSWORD = "Zq7-n0t-" + secrets.token_hex(4)


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    environment.update(env)
    return subprocess.run(
        [str(CONVEYOR), *args], env=environment, capture_output=True, text=True, timeout=30
    )


def _broker_url(password: str, port: int = 5672) -> str:
    parts = urlsplit(AMQP_URL)
    return parts._replace(netloc=f"guest:{quote(password)}@{parts.hostname}:{port}").geturl()


@pytest.mark.rabbitmq
@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ("send", '{"type": "ConfirmOrder", "order_id": "o-1"}'),
            {"CONVEYOR_AMQP_URL": _broker_url(PASSWORD)},
            "ACCESS_REFUSED",
        ),
        (
            ("send", '{"type": "ConfirmOrder", "order_id": "o-1"}'),
            {"CONVEYOR_AMQP_URL": _broker_url(PASSWORD, port=1)},
            "cannot connect to RabbitMQ at amqp://guest:***@",
        ),
        (
            ("history", "o-1"),
            {"CONVEYOR_EVENT_STORE": f"kurrentdb://admin:{PASSWORD}@127.0.0.1:1?tls=false"},
            "kurrentdb://admin:***@127.0.0.1:1",
        ),
        (
            ("query", "order", "o-1"),
            {"CONVEYOR_READ_STORE": (f"mongodb://reader:{PASSWORD}@127.0.0.1:1/db?timeoutMS=200")},
            "mongodb://reader:***@127.0.0.1:1",
        ),
        (
            ("status",),
            {"CONVEYOR_MANAGEMENT_URL": f"http://guest:{PASSWORD}@127.0.0.1:15672/"},
            "refused the credentials",
        ),
        (
            ("run", "--only", "commands", "-v"),
            {"CONVEYOR_AMQP_URL": _broker_url(PASSWORD), "CONVEYOR_OPS_PORT": "0"},
            "ACCESS_REFUSED",
        ),
    ],
    ids=["send-refused", "send-unreachable", "kurrentdb", "mongodb", "status", "run"],
)
def test_a_failed_connection_never_prints_the_password(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    env = {
        "CONVEYOR_EVENT_STORE": str(tmp_path / "events.db"),
        "CONVEYOR_READ_STORE": str(tmp_path / "readmodels.db"),
        "CONVEYOR_HTTP_PORT": "0",
        "CONVEYOR_OPS_PORT": "0",
        **env,
    }
    done = _cli(*args, **env)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert expected in output, output
    assert PASSWORD not in output
    assert quote(PASSWORD) not in output


@pytest.mark.rabbitmq
async def test_the_broker_logs_no_password_when_the_login_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = build_broker(Settings(amqp_url=_broker_url(PASSWORD)))
    with pytest.raises(Exception) as raised:  # noqa: PT011 - whatever aio-pika raises
        await asyncio.wait_for(broker.connect(), 10)
    await broker.stop()
    assert PASSWORD not in str(raised.value)
    assert PASSWORD not in repr(raised.value)
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(broker)


# --------------------------------------------------------------- TLS on the wire


@pytest.fixture(scope="module")
def server_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("amqps")
    cert, key = directory / "server.pem", directory / "server-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert),
        ],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


async def test_amqps_verifies_the_broker_with_the_configured_ca(
    server_certificate: tuple[Path, Path],
) -> None:
    """A TLS listener standing in for RabbitMQ: the broker built from the settings completes
    the handshake only when CONVEYOR_AMQP_CA_FILE names the CA that signed the server."""
    cert, key = server_certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    handshakes: list[bool] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handshakes.append(True)  # only reached after a completed TLS handshake
        writer.close()

    server = await asyncio.start_server(accept, "localhost", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    url = f"amqps://app:{PASSWORD}@localhost:{port}/"
    try:
        trusted = build_broker(Settings(amqp_url=url, amqp_ca_file=cert))
        with pytest.raises(Exception) as raised:  # noqa: PT011 - the fake closes after TLS
            await asyncio.wait_for(trusted.connect(), 10)
        await trusted.stop()
        assert handshakes == [True]
        assert "CERTIFICATE_VERIFY_FAILED" not in str(raised.value)

        untrusted = build_broker(Settings(amqp_url=url))  # the system CAs do not know it
        with pytest.raises(Exception) as raised:  # noqa: PT011
            await asyncio.wait_for(untrusted.connect(), 10)
        await untrusted.stop()
        assert handshakes == [True]  # no second handshake
        assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value) or isinstance(
            raised.value, ssl.SSLError
        ), repr(raised.value)
        assert PASSWORD not in str(raised.value)
    finally:
        server.close()
        await server.wait_closed()
