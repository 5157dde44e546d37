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
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.gateway.relay import EVENTS
from conveyor.readmodels.sqlite import SqliteReadModelStore
from conveyor.settings import Settings
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
        "write": r"^conveyor\.commands$",
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
        await declare_topology(settings, broker, commands=True, events=False, workflows=True)
        await broker.declare_exchange(EVENTS)
    worker = await aio_pika.connect(loaded.amqp_url("conveyor-worker"))
    async with worker:
        channel = await worker.channel()
        await _refused(channel.declare_queue("someone-elses-queue", durable=True))
    worker = await aio_pika.connect(loaded.amqp_url("conveyor-worker"))
    async with worker:  # the process manager sends commands as producers do
        channel = await worker.channel(publisher_confirms=True)
        commands_exchange = await channel.get_exchange("conveyor.commands", ensure=False)
        await commands_exchange.publish(
            aio_pika.Message(b'{"type": "ReserveStock"}', message_id="pm-1"),
            routing_key="inventory.commands",
        )

    # The publisher publishes commands through the command exchange, and that is all.
    publisher = await aio_pika.connect(loaded.amqp_url("conveyor-publisher"))
    async with publisher:
        channel = await publisher.channel(publisher_confirms=True)
        commands_exchange = await channel.get_exchange("conveyor.commands", ensure=False)
        await commands_exchange.publish(
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
async def _create_sqlite_stores(directory: Path) -> None:
    await (await SqliteEventStore(directory / "events.db").open()).close()
    await (await SqliteReadModelStore(directory / "readmodels.db").open()).close()


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
    if args == ("status",):  # it only reads: it refuses stores that do not exist yet
        asyncio.run(_create_sqlite_stores(tmp_path))
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


# --------------------------------------------------------------- forgeries (issue 18 part 1)

FORGED_POSITION = 10**15


def _fake_event(order_id: str, customer_id: str) -> bytes:
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "type": "OrderCreated",
            "schema_version": 1,
            "order_id": order_id,
            "customer_id": customer_id,
            "version": 1,
            "occurred_at": "2026-01-01T00:00:00+00:00",
            "data": {"customer_id": customer_id},
        }
    ).encode()


@pytest.mark.rabbitmq
async def test_forgeries_are_refused_by_the_broker_or_ignored_by_the_projections(
    loaded: LoadedDefinitions, tmp_path: Path
) -> None:
    """The attacks of issue 18, run with the shipped definitions: the publisher reaches
    nothing but the command queue, and an account that can reach the projection queues but
    is not the gateway's cannot make the read models or the progress believe anything."""
    from conveyor.bootstrap import COMMANDS_EXCHANGE
    from conveyor.readmodels.projection_consumer import ProjectionConsumer
    from messaging import failures
    from tests.integration.test_projections import read_models
    from workers.host import WorkerHost

    loaded.load(with_passwords=True)
    settings = Settings(
        amqp_url=loaded.amqp_url("conveyor-worker"),
        event_store=str(tmp_path / "events.db"),
        read_store=str(tmp_path / "readmodels.db"),
        http_port=0,
        ops_port=0,
        retry_delays=(0.2,),
        max_attempts=2,
        gateway_poll_interval=0.05,
    )
    host = WorkerHost(settings, ("commands", "gateway", "projections"))
    await host.start()
    try:
        summary_queue = f"{settings.projection_queue_prefix}.order_summary"

        # The publisher's one way in: the command exchange, routed to the command queue.
        publisher = await aio_pika.connect(loaded.amqp_url("conveyor-publisher"))
        async with publisher:
            channel = await publisher.channel(publisher_confirms=True, on_return_raises=True)
            commands = await channel.get_exchange(COMMANDS_EXCHANGE.name, ensure=False)
            await commands.publish(
                aio_pika.Message(
                    json.dumps(
                        {"type": "CreateOrder", "order_id": "o-real", "customer_id": "alice"}
                    ).encode(),
                    message_id="c-real",
                ),
                routing_key=settings.command_queue,
            )
            # …and it routes nowhere else: not to a projection queue by its name.
            with pytest.raises(aio_pika.exceptions.DeliveryError):
                await commands.publish(
                    aio_pika.Message(_fake_event("o-forged", "mallory")),
                    routing_key=summary_queue,
                )

        # Every other door is shut: the default exchange (to any queue), the events exchange.
        for queue in (settings.command_queue, summary_queue, f"{summary_queue}.dlq"):
            publisher = await aio_pika.connect(loaded.amqp_url("conveyor-publisher"))
            async with publisher:
                channel = await publisher.channel(publisher_confirms=True)
                await _refused(
                    channel.default_exchange.publish(
                        aio_pika.Message(_fake_event("o-forged", "mallory")), routing_key=queue
                    )
                )
        publisher = await aio_pika.connect(loaded.amqp_url("conveyor-publisher"))
        async with publisher:
            channel = await publisher.channel(publisher_confirms=True)
            events = await channel.get_exchange(EVENTS.name, ensure=False)
            await _refused(
                events.publish(
                    aio_pika.Message(_fake_event("o-forged", "mallory")),
                    routing_key="orders.created",
                )
            )
        # Nor can it claim to be the gateway: the broker validates user_id.
        publisher = await aio_pika.connect(loaded.amqp_url("conveyor-publisher"))
        async with publisher:
            channel = await publisher.channel(publisher_confirms=True)
            commands = await channel.get_exchange(COMMANDS_EXCHANGE.name, ensure=False)
            with pytest.raises((ChannelClosed, ChannelAccessRefused)) as raised:
                await commands.publish(
                    aio_pika.Message(b"{}", user_id=loaded.users["conveyor-worker"]),
                    routing_key=settings.command_queue,
                )
            assert "PRECONDITION_FAILED" in str(raised.value)

        async def real_order_projected() -> bool:
            return "o-real" in (await read_models(settings))["order_summary"]

        await eventually(real_order_projected, within=30, what="the real order in the summary")
        trackers = {
            c.progress.name: c.progress for c in host.consumers if isinstance(c, ProjectionConsumer)
        }
        honest_position = trackers["order_summary"].position
        assert 0 < honest_position < FORGED_POSITION

        # An account that *can* reach the events exchange but is not the gateway's (here the
        # admin; on the embedded set-up, any other user): a fake confirmed order, a fake
        # OrderCreated ahead of the real one, a position of 10^15 — with no user_id and
        # with its own, broker-validated one.
        admin = await aio_pika.connect(loaded.amqp_url("conveyor-admin"))
        async with admin:
            channel = await admin.channel(publisher_confirms=True)
            events = await channel.get_exchange(EVENTS.name, ensure=False)
            for user_id in (None, loaded.users["conveyor-admin"]):
                await events.publish(
                    aio_pika.Message(
                        _fake_event("o-ahead", "mallory"),
                        message_id=str(uuid.uuid4()),
                        user_id=user_id,
                        headers={"x-conveyor-position": FORGED_POSITION},
                    ),
                    routing_key="orders.created",
                )
        with loaded.http("conveyor-admin") as http:

            async def refused_into_the_dlq() -> bool:
                peek = {"count": 10, "ackmode": "ack_requeue_true", "encoding": "auto"}
                dlq = quote(f"{summary_queue}.dlq", safe="")
                got = http.post(f"/queues/{quote(loaded.vhost, safe='')}/{dlq}/get", json=peek)
                letters = got.json() if got.status_code == 200 else []
                return len(letters) == 2 and all(
                    letter["properties"]["headers"][failures.ERROR_TYPE] == "UntrustedPublisher"
                    for letter in letters
                )

            await eventually(refused_into_the_dlq, within=30, what="two refused forgeries")

        # The real OrderCreated of that order, sent afterwards, is applied as the real one.
        publisher = await aio_pika.connect(loaded.amqp_url("conveyor-publisher"))
        async with publisher:
            channel = await publisher.channel(publisher_confirms=True, on_return_raises=True)
            commands = await channel.get_exchange(COMMANDS_EXCHANGE.name, ensure=False)
            await commands.publish(
                aio_pika.Message(
                    json.dumps(
                        {"type": "CreateOrder", "order_id": "o-ahead", "customer_id": "bob"}
                    ).encode(),
                    message_id="c-ahead",
                ),
                routing_key=settings.command_queue,
            )

        async def real_customer() -> bool:
            summary = (await read_models(settings))["order_summary"].get("o-ahead")
            return summary is not None and summary["customer_id"] == "bob"

        await eventually(real_customer, within=30, what="o-ahead with its real customer")

        # `conveyor send` works with nothing more than the publisher's rights.
        sent = await asyncio.to_thread(
            _cli,
            "send",
            '{"type": "CreateOrder", "order_id": "o-cli", "customer_id": "carol"}',
            CONVEYOR_AMQP_URL=loaded.amqp_url("conveyor-publisher"),
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr

        async def sent_by_cli() -> bool:
            return "o-cli" in (await read_models(settings))["order_summary"]

        await eventually(sent_by_cli, within=30, what="the order sent with conveyor send")
        assert "o-forged" not in (await read_models(settings))["order_summary"]
        assert all(t.position < FORGED_POSITION for t in trackers.values())
    finally:
        await host.stop()


@pytest.mark.rabbitmq
async def test_provenance_headers_a_sender_supplies_are_overwritten(
    settings: Settings, start_worker: Any, management: Management, test_vhost: str
) -> None:
    """A dead letter tells who sent the message from what the broker validated, never from
    what the sender wrote into the x-conveyor-original-* headers itself."""
    from messaging import failures
    from tests.integration.test_command_worker import dlq_messages

    await start_worker(settings)
    management.publish(
        test_vhost,
        settings.command_queue,
        b"{not json",
        {
            "headers": {
                failures.ORIGINAL_USER_ID: "conveyor-admin",
                failures.ORIGINAL_APP_ID: "the-bank",
                failures.ORIGINAL_QUEUE: "projections.order_summary",
            }
        },
    )
    dead = await eventually(
        lambda: dlq_messages(management, test_vhost, settings), what="a DLQ message"
    )
    headers = dead[0]["properties"]["headers"]
    assert headers[failures.ERROR_TYPE] == "MalformedJSON"
    assert failures.ORIGINAL_USER_ID not in headers  # published without a user_id
    assert failures.ORIGINAL_APP_ID not in headers  # and without an app_id
    assert headers[failures.ORIGINAL_QUEUE] == settings.command_queue


@pytest.mark.rabbitmq
@pytest.mark.parametrize("how", ["cli", "console"])
async def test_a_redriven_gateway_event_is_still_trusted(
    settings: Settings,
    start_worker: Any,
    amqp_url: str,
    management: Management,
    test_vhost: str,
    how: str,
) -> None:
    """The user_id check must not turn a re-drive of the gateway's own events into
    UntrustedPublisher: the CLI keeps a user_id that is its own login, the console's shovel
    keeps the properties as they are. (Only the summary's DLQ holds it, so only the summary
    is checked.)"""
    from messaging.integration_events import encode
    from tests.integration.test_dlq import conveyor_headers, dlq
    from tests.integration.test_gateway import store_orders
    from tests.integration.test_projections import integration_events, read_models

    await store_orders(settings.event_store, 1)
    created = (await integration_events(settings))[0]
    await start_worker(settings, ("projections",))
    summary_queue = f"{settings.projection_queue_prefix}.order_summary"
    dead = f"{summary_queue}.dlq"
    # The gateway's event as the projection worker dead-lettered it: the worker's copy
    # keeps the user_id, which is its own login (the gateway shares the account).
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(
                encode(created),
                message_id=str(created.event_id),
                user_id=settings.amqp_user(),
                headers=conveyor_headers("ReadStoreUnavailable"),
            ),
            routing_key=dead,
        )

    def dead_letters() -> list[dict[str, Any]]:
        return management.peek(test_vhost, dead)

    if how == "cli":
        moved = await dlq(settings, "redrive", dead)
        assert moved.returncode == 0, moved.stderr
    else:
        management.move_messages(test_vhost, dead, dead.removesuffix(".dlq"))

    async def applied() -> bool:
        summary = (await read_models(settings))["order_summary"].get(created.order_id)
        return summary is not None and summary["version"] == created.version

    await eventually(applied, within=30, what="the re-driven event applied")
    assert dead_letters() == []
