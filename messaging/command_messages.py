"""The wire format of commands: JSON bodies on the command queue, validated with pydantic.

A body that is not JSON, not an object, of an unknown `type`, with a missing, mistyped or
unknown field, or too large is *invalid input*: it is dead-lettered at once with the reason.
Range rules (quantity 1..1000, prices with two decimals…) are business rules: they belong
to the domain and end as a *rejection*, not a dead letter.

Unknown fields are refused rather than ignored: a misspelt optional field would otherwise
be silently dropped and the command applied without it.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from conveyor.application.commands import CommandEnvelope
from domain.orders.commands import (
    AddItem,
    CancelOrder,
    Command,
    ConfirmOrder,
    CreateOrder,
    RemoveItem,
)

ID_PUNCTUATION = "-_.:@/+#~="
ID_ALPHABET = f"letters, digits and {' '.join(ID_PUNCTUATION)}"
# control, format, surrogate, private use, unassigned
_CONTROL_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn")


def _nfc(value: object) -> object:
    """One spelling per text: "café" typed as é or as e + U+0301 is one customer."""
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else value


def _character(char: str) -> str:
    return f"U+{ord(char):04X}" + (f" {name}" if (name := unicodedata.name(char, "")) else "")


def _id_alphabet(value: str) -> str:
    for char in value:
        if char not in ID_PUNCTUATION and unicodedata.category(char)[0] not in "LMN":
            raise ValueError(f"an id may hold only {ID_ALPHABET}; found {_character(char)}")
    return value


def _no_control_characters(value: str) -> str:
    for char in value:
        if unicodedata.category(char) in _CONTROL_CATEGORIES:
            raise ValueError(f"control or unassigned character {_character(char)} is not allowed")
    return value


Identifier = Annotated[
    str,
    BeforeValidator(_nfc),
    Field(
        min_length=1,
        max_length=200,
        strict=True,
        description=f"1-200 characters after Unicode NFC normalisation: {ID_ALPHABET}",
    ),
    AfterValidator(_id_alphabet),
]
Text = Annotated[
    str,
    BeforeValidator(_nfc),
    Field(min_length=1, max_length=2000, strict=True, description="No control characters"),
    AfterValidator(_no_control_characters),
]
IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
# Wide enough for every value the domain judges (its rules then say yes or no, with a
# reason), narrow enough that no number costs more than a few digits to handle.
Quantity = Annotated[int, Field(strict=True, ge=-(10**9), le=10**9)]
Price = Annotated[
    Decimal,
    Field(
        max_digits=24,
        ge=-(10**15),
        le=10**15,
        allow_inf_nan=False,
        description='A decimal as a JSON string ("9.99") or number; never read as a float',
    ),
]


class _CommandMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: Identifier | None = None
    correlation_id: Identifier | None = None
    order_id: Identifier

    def to_command(self) -> Command:
        raise NotImplementedError


class CreateOrderMessage(_CommandMessage):
    type: Literal["CreateOrder"]
    customer_id: Identifier

    def to_command(self) -> Command:
        return CreateOrder(order_id=self.order_id, customer_id=self.customer_id)


class AddItemMessage(_CommandMessage):
    type: Literal["AddItem"]
    sku: Identifier
    quantity: Quantity
    unit_price: Price

    def to_command(self) -> Command:
        return AddItem(
            order_id=self.order_id, sku=self.sku, quantity=self.quantity, unit_price=self.unit_price
        )


class RemoveItemMessage(_CommandMessage):
    type: Literal["RemoveItem"]
    sku: Identifier

    def to_command(self) -> Command:
        return RemoveItem(order_id=self.order_id, sku=self.sku)


class ConfirmOrderMessage(_CommandMessage):
    type: Literal["ConfirmOrder"]

    def to_command(self) -> Command:
        return ConfirmOrder(order_id=self.order_id)


class CancelOrderMessage(_CommandMessage):
    type: Literal["CancelOrder"]
    reason: Text

    def to_command(self) -> Command:
        return CancelOrder(order_id=self.order_id, reason=self.reason)


CommandMessage = Annotated[
    CreateOrderMessage
    | AddItemMessage
    | RemoveItemMessage
    | ConfirmOrderMessage
    | CancelOrderMessage,
    Field(discriminator="type"),
]
COMMAND_MESSAGE = TypeAdapter[Any](CommandMessage)
COMMAND_TYPES = ("CreateOrder", "AddItem", "RemoveItem", "ConfirmOrder", "CancelOrder")


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
    message_id: str | None = None,
    correlation_id: str | None = None,
    max_bytes: int = 256 * 1024,
) -> CommandEnvelope:
    """Validate a command message. `message_id`/`correlation_id` are the AMQP properties,
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
    if raw.get("type") not in COMMAND_TYPES:
        raise InvalidCommandMessage(
            "UnknownCommandType",
            f"'type' must be one of {', '.join(COMMAND_TYPES)}; got {raw.get('type')!r}",
        )
    try:
        message: _CommandMessage = COMMAND_MESSAGE.validate_python(raw)
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


def command_json_schema() -> Mapping[str, Any]:
    return COMMAND_MESSAGE.json_schema()
