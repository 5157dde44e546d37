"""The wire format of commands: JSON bodies on the command queue, validated with pydantic.

A body that is not JSON, not an object, of an unknown `type`, with a missing, mistyped or
unknown field, or too large is *invalid input*: it is dead-lettered at once with the reason.
Range rules (quantity 1..1000, prices with two decimals…) are business rules: they belong
to the domain and end as a *rejection*, not a dead letter.

Unknown fields are refused rather than ignored: a misspelt optional field would otherwise
be silently dropped and the command applied without it.

This module knows no aggregate: each aggregate's command models are in its wire contract
(messaging/contracts/<name>.py), reached through its definition.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from conveyor.application.aggregates import AggregateDefinition
from conveyor.application.commands import CommandEnvelope
from messaging.contracts.wire import IDENTIFIER


class InvalidCommandMessage(Exception):
    """The message can never be processed as it is: dead-letter it, don't retry it."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number here")


def parse_command(
    body: bytes,
    *,
    aggregate: AggregateDefinition,
    message_id: str | None = None,
    correlation_id: str | None = None,
    max_bytes: int = 256 * 1024,
) -> CommandEnvelope:
    """Validate a command message of `aggregate` (the one whose queue it came from).
    `message_id`/`correlation_id` are the AMQP properties,
    used when the body does not carry `command_id`/`correlation_id`."""
    if len(body) > max_bytes:
        raise InvalidCommandMessage(
            "MessageTooLarge", f"message body is {len(body)} bytes; the limit is {max_bytes}"
        )
    try:
        # Numbers become Decimal, so a price never passes through a float.
        raw = json.loads(body, parse_float=Decimal, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidCommandMessage(
            "MalformedJSON", f"body is not valid UTF-8 JSON: {exc}"
        ) from exc
    except RecursionError as exc:  # "[[[[…" nested deeper than the decoder's stack allows
        raise InvalidCommandMessage(
            "MalformedJSON", "body is nested too deeply to decode as JSON"
        ) from exc
    if not isinstance(raw, dict):
        raise InvalidCommandMessage(
            "SchemaError", f"body must be a JSON object, got {type(raw).__name__}"
        )
    if raw.get("type") not in aggregate.commands:
        raise InvalidCommandMessage(
            "UnknownCommandType",
            f"'type' must be one of {', '.join(aggregate.commands)}; got {raw.get('type')!r}",
        )
    try:
        message: Any = aggregate.command_message.validate_python(raw)
    except ValidationError as exc:
        raise InvalidCommandMessage("SchemaError", _describe(raw["type"], exc)) from exc
    command_id = message.command_id or _amqp_id("message_id", message_id)
    if not command_id:
        raise InvalidCommandMessage(
            "MissingCommandId", "no command_id in the body and no AMQP message_id"
        )
    correlation = message.correlation_id or _amqp_id("correlation_id", correlation_id) or command_id
    return CommandEnvelope(
        command=message.to_command(),
        command_id=command_id,
        correlation_id=correlation,
        causation_id=command_id,
        aggregate=aggregate.name,
        aggregate_id=getattr(message, aggregate.id_field),
    )


def _amqp_id(name: str, value: str | None) -> str | None:
    """An AMQP property standing in for a body field: held to the same rules."""
    if not value:
        return None
    try:
        return IDENTIFIER.validate_python(value)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]["msg"]
        raise InvalidCommandMessage("SchemaError", f"AMQP {name}: {problem}") from exc


def _describe(command_type: str, error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"][1:]) or "body"
        problems.append(f"{location}: {item['msg']}")
    return f"{command_type} is invalid: " + "; ".join(problems)


def command_json_schema(aggregate: AggregateDefinition) -> Mapping[str, Any]:
    return aggregate.command_message.json_schema()


__all__ = ["InvalidCommandMessage", "command_json_schema", "parse_command"]
