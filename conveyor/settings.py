"""All configuration, read from the environment (CONVEYOR_*) in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SQLITE_PATH = ".conveyor/events.db"
DEFAULT_READ_STORE_PATH = ".conveyor/readmodels.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    """RabbitMQ; a vhost in the URL is honoured (amqp://user:pass@host:5672/vhost)."""

    event_store: str = DEFAULT_SQLITE_PATH
    """A SQLite file path (or sqlite:///path), or kurrentdb://… / esdb://… for KurrentDB."""

    read_store: str = DEFAULT_READ_STORE_PATH
    """A SQLite file path (or sqlite:///path), or mongodb://host:port/dbname for MongoDB."""

    command_queue: str = "orders.commands"
    projection_queue_prefix: str = "projections"
    """Projection queues are <prefix>.order_summary, <prefix>.customer_history, …"""

    gateway_batch_size: int = Field(default=500, ge=1, le=10_000)
    gateway_poll_interval: float = Field(default=0.1, gt=0)
    """How often an idle gateway in its own process looks for new events (seconds)."""
    gateway_lease_seconds: float = Field(default=10.0, gt=0)
    """A gateway that stops renewing its lease is replaced by a standby after this long."""

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    """The query API (and, per process, health and metrics); 0 picks a free port."""
    max_attempts: int = Field(default=5, ge=1, le=100)
    """Failed attempts of a message before it is dead-lettered (transient failures)."""

    retry_delays: Annotated[tuple[float, ...], NoDecode] = (1.0, 5.0, 30.0, 120.0)
    """Delay tiers in seconds for retries 1, 2, 3…; the last tier repeats. Comma-separated."""

    prefetch: int = Field(default=100, ge=1, le=10_000)
    """Unacknowledged messages per consumer: bounds in-flight work and memory."""

    delivery_limit: int = Field(default=20, ge=1)
    """Broker-side safety net (quorum x-delivery-limit) for a message that crashes workers."""

    max_message_bytes: int = Field(default=256 * 1024, ge=1024)
    conflict_attempts: int = Field(default=10, ge=1)
    """In-process retries of a command on an optimistic-concurrency conflict."""

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
    amqp_cert_file: Path | None = None
    amqp_key_file: Path | None = None

    sqlite_busy_timeout: float = Field(default=5.0, gt=0)
    shutdown_timeout: float = Field(default=15.0, gt=0)
    """How long a stopping worker lets in-flight messages finish."""

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
