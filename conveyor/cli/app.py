"""The `conveyor` Typer app and what every command shares: failures reported as one line
with an exit code, configuration loading, and running a command's coroutine."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import typer
from aiormq.exceptions import AMQPConnectionError, ChannelPreconditionFailed
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console

from conveyor.bootstrap import describe_event_store, describe_read_store
from conveyor.embedded.sqlite import SqliteFileUnusable
from conveyor.eventstore.port import EventStoreUnavailable
from conveyor.eventstore.serialization import redact_url
from conveyor.readmodels.port import ReadStoreUnavailable
from conveyor.settings import Settings

app = typer.Typer(
    name="conveyor",
    help="Event-sourced order workers on RabbitMQ.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
T = TypeVar("T")


class CliError(Exception):
    """A failure to report as one line and a non-zero exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int = 1) -> NoReturn:
    raise CliError(message, exit_code)


def load_settings() -> Settings:
    try:
        return Settings()
    except SettingsError as exc:  # a CONVEYOR_*_FILE problem; never quotes the content
        fail(f"invalid configuration: {exc}", 2)
    except ValidationError as exc:
        problems = "; ".join(
            f"CONVEYOR_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        fail(f"invalid configuration: {problems}", 2)


def quiet_logging() -> None:
    """One-shot commands report failures themselves, as one line: library log lines
    (aiormq logs every failed connection attempt) would only repeat them."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("aiormq", "aio_pika", "conveyor.broker"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


def run_async(make: Callable[[Settings], Awaitable[T]]) -> T:
    """Run a command's coroutine, turning the failures a user can meet into one clear line."""
    quiet_logging()
    settings = load_settings()
    try:
        return asyncio.run(make(settings))  # type: ignore[arg-type]
    except CliError:
        raise
    except SqliteFileUnusable as exc:  # permanent: says which file and why
        fail(str(exc), 2)
    except EventStoreUnavailable as exc:
        fail(f"event store unavailable ({describe_event_store(settings)}): {exc}")
    except ReadStoreUnavailable as exc:
        fail(f"read-model store unavailable ({describe_read_store(settings)}): {exc}")
    except (AMQPConnectionError, ConnectionError) as exc:
        fail(
            f"cannot connect to RabbitMQ at {redact_url(settings.amqp_url)}: "
            f"{exc or type(exc).__name__}"
        )
    except OSError as exc:
        fail(str(exc))
    except ChannelPreconditionFailed as exc:
        fail(f"RabbitMQ refused the topology (a queue exists with other arguments?): {exc}")
    except ValueError as exc:
        fail(str(exc), 2)
    except Exception as exc:  # anything else: still one line, the traceback only with -v
        logging.getLogger("conveyor").debug("unexpected failure", exc_info=True)
        fail(f"{type(exc).__name__}: {exc}")


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))
