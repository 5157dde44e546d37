"""All configuration, read from the environment (CONVEYOR_*) in one place.

Every setting CONVEYOR_X can instead be given as CONVEYOR_X_FILE=/path: the content of that
file, without its trailing newline (Docker and Kubernetes secrets). URL settings hold
passwords, so a Settings' repr/str shows them masked; the fields themselves stay plain
`str`, because every adapter needs the real URL and only the password part is secret.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from conveyor.eventstore.serialization import redact_url

DEFAULT_SQLITE_PATH = ".conveyor/events.db"
DEFAULT_READ_STORE_PATH = ".conveyor/readmodels.db"
ENV_PREFIX = "CONVEYOR_"
FILE_SUFFIX = "_FILE"
# Settings that are URLs and may carry a password: masked in repr and in error messages.
URL_SETTINGS = ("amqp_url", "event_store", "read_store", "management_url")
# RabbitMQ's documented guest password is no secret: masking it everywhere would also mask
# the user name "guest" in every message.
PUBLIC_DEFAULT_PASSWORD = "guest"


class SettingsFileSource(PydanticBaseSettingsSource):
    """CONVEYOR_X_FILE=/path sets X to the file's content (trailing newlines stripped).

    Setting both CONVEYOR_X and CONVEYOR_X_FILE is an error (which one wins would be a
    guess), and so is a file that cannot be read or is empty. Messages name the variable
    and the path, never the content.
    """

    def __init__(
        self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(settings_cls)
        self._environ = os.environ if environ is None else environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads every field at once (the abstract API needs it defined).
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        environ = {name.upper(): value for name, value in self._environ.items()}
        prefix = str(self.config.get("env_prefix") or "").upper()
        values: dict[str, Any] = {}
        for name in self.settings_cls.model_fields:
            variable = f"{prefix}{name}".upper()
            file_variable = variable + FILE_SUFFIX
            path = environ.get(file_variable)
            if path is None:
                continue
            if variable in environ:
                raise SettingsError(
                    f"both {variable} and {file_variable} are set: give the setting one way"
                )
            values[name] = _read_setting_file(file_variable, path)
        return values


def _read_setting_file(variable: str, path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{variable}: {path} is not UTF-8 text") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SettingsError(f"{variable}: cannot read {path}: {reason}") from None
    value = text.rstrip("\r\n")
    if not value:
        raise SettingsError(f"{variable}: {path} is empty")
    return value


def sqlite_location(value: str) -> str:
    """A SQLite store's location as one absolute file path; server URLs unchanged.

    Resolved here, once: every process (and the messages it prints) names the same file
    only if a relative path never reaches code that runs after a change of directory.
    """
    if "://" in value and not value.startswith("sqlite:"):
        return value  # a server: kurrentdb://, mongodb://, …
    path = value.removeprefix("sqlite:///")  # sqlite:///relative, sqlite:////absolute
    in_memory = path in ("", ":memory:") or path.startswith("file:") or "mode=memory" in path
    if in_memory or path.startswith("sqlite:"):
        raise ValueError(
            f"{value!r} names no SQLite file: give a file path, or sqlite:///path (an "
            "in-memory database cannot be shared: each connection would get its own)"
        )
    return str(Path(path).expanduser().resolve())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    """RabbitMQ; a vhost in the URL is honoured (amqp://user:pass@host:5672/vhost). amqps://
    for TLS (with the amqp_*_file settings). guest/guest only works from localhost: RabbitMQ
    refuses the guest user over the network by default, which is why it is the default."""

    event_store: str = Field(default=DEFAULT_SQLITE_PATH, validate_default=True)
    """A SQLite file path (or sqlite:///path), or kurrentdb://… / esdb://… for KurrentDB.
    A relative path is made absolute once, against the directory the process started in."""

    read_store: str = Field(default=DEFAULT_READ_STORE_PATH, validate_default=True)
    """A SQLite file path (or sqlite:///path), or mongodb://host:port/dbname for MongoDB."""

    command_queue: str = "orders.commands"
    event_publisher: str | None = None
    """The RabbitMQ user of the gateway: projections apply only integration events whose
    broker-validated AMQP `user_id` is this user (or their own). Unset: the user of
    amqp_url — right when the gateway and the projection workers share an account."""
    projection_queue_prefix: str = "projections"
    """Projection queues are <prefix>.order_summary, <prefix>.customer_history, …"""

    gateway_batch_size: int = Field(default=500, ge=1, le=10_000)
    gateway_poll_interval: float = Field(default=0.1, gt=0)
    """How often an idle gateway in its own process looks for new events (seconds)."""
    gateway_lease_seconds: float = Field(default=10.0, gt=0)
    """A gateway that stops renewing its lease is replaced by a standby after this long."""

    publish_timeout: float = Field(default=10.0, gt=0)
    """Longest wait for one publish and its confirm (seconds). A broker under a memory or
    disk alarm blocks publishing connections: unbounded, a handler or the gateway would
    wait for ever. A publish that times out is retried, never dropped."""
    reconcile_settle_seconds: float = Field(default=5.0, gt=0)
    """The projection reconciler (conveyor/readmodels/healing.py) checks events the gateway
    confirmed at least this long ago against the read models, and heals what never arrived."""

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    """The query API (and, per process, health and metrics); 0 picks a free port."""
    http_token: SecretStr | None = None
    """When set, the query API and /metrics answer only requests carrying
    `Authorization: Bearer <token>` (health probes stay open). Give it as
    CONVEYOR_HTTP_TOKEN_FILE to keep it out of the environment."""
    http_allowed_hosts: Annotated[tuple[str, ...] | None, NoDecode] = None
    """Host names the HTTP servers answer to (comma-separated; `*` any). Unset: a server
    bound to loopback answers only to localhost/127.0.0.1/::1, any other to any name."""
    max_attempts: int = Field(default=5, ge=1, le=100)
    """Failed attempts of a message before it is dead-lettered (transient failures)."""

    retry_delays: Annotated[tuple[float, ...], NoDecode] = (1.0, 5.0, 30.0, 120.0)
    """Delay tiers in seconds for retries 1, 2, 3…; the last tier repeats. Comma-separated."""

    prefetch: int = Field(default=100, ge=1, le=10_000)
    """Unacknowledged messages per consumer: bounds in-flight work and memory."""

    delivery_limit: int = Field(default=20, ge=1)
    """Broker-side safety net (quorum x-delivery-limit) for a message that crashes workers."""

    outage_probe_first_delay: float = Field(default=0.5, gt=0)
    outage_probe_max_delay: float = Field(default=30.0, gt=0)
    """While a store is away its consumers pause (no attempts spent) and probe it with
    growing delays, from the first to at most the max (seconds), then resume."""

    max_message_bytes: int = Field(default=256 * 1024, ge=1024)
    """A larger command or event is invalid (DLQ). The broker's own max_message_size
    (deploy/rabbitmq/rabbitmq.conf) refuses much larger ones before a worker reads them."""
    dead_letter_max_bytes: int = Field(default=1024**3, ge=1024)
    """Each .dlq holds at most this many bytes of bodies (x-max-length-bytes); when full it
    refuses new dead letters and their work queue holds them instead."""
    conflict_attempts: int = Field(default=10, ge=1)
    """In-process retries of a command on an optimistic-concurrency conflict."""

    # --- the order-fulfilment process manager (conveyor/workflows) ---
    process_manager_queue: str = "fulfilment.events"
    """The process manager's input: integration events it reacts to, and its timeouts."""
    fulfilment_timeout: float = Field(default=900.0, gt=0)
    """Seconds a fulfilment workflow waits for stock and payment before it releases what was
    reserved and cancels the order. Durable: a delayed message through RabbitMQ (a TTL
    queue per value, `<process_manager_queue>.timeouts.<N>ms`)."""
    fulfilment_stuck_margin: float = Field(default=60.0, ge=0)
    """A workflow still waiting this long past its deadline is stuck (`conveyor status`,
    `conveyor workflows stuck`): its timeout never came back."""

    # --- operations (issue 4) ---
    management_url: str | None = None
    """RabbitMQ management HTTP API for `conveyor dlq` and `conveyor status`, e.g.
    http://user:pass@host:15672/. Unset: the AMQP URL's host and credentials on port 15672
    (https on 15671 for amqps)."""

    ops_host: str = "127.0.0.1"
    ops_port: int = Field(default=9464, ge=0, le=65535)
    """Every worker process serves /metrics, /health/live and /health/ready here; 0 picks a
    free port. Give each process on one host its own port."""

    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    tracing: bool = False
    """OpenTelemetry tracing through FastStream's middleware (needs the `tracing` extra);
    the exporter reads the standard OTEL_EXPORTER_OTLP_* variables."""

    status_max_lag_events: int = Field(default=1000, ge=0)
    status_max_lag_seconds: float = Field(default=60.0, ge=0)
    """`conveyor status` exits non-zero when the gateway or a projection is further behind."""

    # --- TLS for AMQP (amqps:// URLs); KurrentDB and MongoDB take theirs in their URLs ---
    amqp_ca_file: Path | None = None
    """PEM CA bundle that signed the broker's certificate (unset: the system's CAs)."""
    amqp_cert_file: Path | None = None
    """PEM client certificate (mutual TLS); may hold the key too."""
    amqp_key_file: Path | None = None
    """PEM private key of amqp_cert_file, when it is a separate file."""

    sqlite_busy_timeout: float = Field(default=5.0, gt=0)
    sqlite_allow_affected_version: bool = False
    """Open SQLite files even with a SQLite library that has the WAL-reset bug (with a
    warning): only safe when a single process ever opens each file."""
    shutdown_timeout: float = Field(default=15.0, gt=0)
    """How long a stopping worker lets in-flight messages finish; stopping as a whole ends
    within this plus a few seconds, even when the broker no longer answers."""
    amqp_connect_timeout: float = Field(default=15.0, gt=0)
    """How long connecting to RabbitMQ (TCP, TLS and the AMQP handshake) may take. A broker
    that accepts connections but never answers — one out of file handles does — fails the
    start with this, instead of hanging it."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            SettingsFileSource(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name in URL_SETTINGS and isinstance(value, str):
                yield name, redact_url(value)
            else:
                yield name, value

    def amqp_user(self) -> str:
        """The RabbitMQ user this process logs in as: what the broker validates an AMQP
        `user_id` against (AMQP's default login is guest)."""
        try:
            username = urlsplit(self.amqp_url).username
        except ValueError:
            username = None
        return unquote(username or "") or "guest"

    def secrets(self) -> set[str]:
        """The passwords in the URL settings, as written and percent-decoded."""
        found = set()
        for name in URL_SETTINGS:
            value = getattr(self, name)
            if not isinstance(value, str):
                continue
            try:
                password = urlsplit(value).password
            except ValueError:
                continue
            if password and password != PUBLIC_DEFAULT_PASSWORD:
                found |= {password, unquote(password)}
        return found

    def redact(self, text: str) -> str:
        """`text` with every password of these settings masked: for error messages that
        quote something (a library's exception) we do not control."""
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    @field_validator("amqp_ca_file", "amqp_cert_file", "amqp_key_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} does not exist or is not a file")
        return value

    @field_validator("event_store", "read_store")
    @classmethod
    def _absolute_sqlite_path(cls, value: str) -> str:
        return sqlite_location(value)

    @field_validator("http_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("retry_delays")
    @classmethod
    def _positive_delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(delay <= 0 for delay in value):
            raise ValueError("retry_delays needs at least one delay, each > 0 seconds")
        return value
