"""All configuration, read from the environment (CONVEYOR_*) in one place."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SQLITE_PATH = ".conveyor/events.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    """RabbitMQ; a vhost in the URL is honoured (amqp://user:pass@host:5672/vhost)."""

    event_store: str = DEFAULT_SQLITE_PATH
    """A SQLite file path (or sqlite:///path), or kurrentdb://… / esdb://… for KurrentDB."""

    command_queue: str = "orders.commands"
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
