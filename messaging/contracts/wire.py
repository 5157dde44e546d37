"""Types shared by every aggregate's wire contract: ids, text, numbers, the command base.

Commands are refused when they carry unknown fields (a misspelt optional field would
otherwise be silently dropped); integration events are read leniently (consumers ignore
fields they do not know, so the contract may grow without a new version).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar
from uuid import UUID

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

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


class CommandMessage(BaseModel):
    """The base of every command message; a subclass adds the aggregate's id field (named
    in its definition), `type: Literal[...]` and its own fields, and `to_command()`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: Identifier | None = None
    correlation_id: Identifier | None = None

    def to_command(self) -> Any:
        raise NotImplementedError


DecimalText = Annotated[
    str, Field(pattern=r"^-?\d+(\.\d+)?$", max_length=40, description="A decimal as text")
]
# Bounded like the commands they come from: a consumer never holds more than a few KB per
# event.
Id = Annotated[str, Field(max_length=255)]  # an AMQP short string: what any stored id fits in
Reason = Annotated[str, Field(max_length=2000)]


class EventData(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class AggregateEvent(BaseModel):
    """The envelope of an integration event, for aggregates registered from now on (Order's
    predates it: messaging/contracts/orders.py). A subclass adds `type: Literal[...]` and
    `data`, and sets `routing_keys` (event type → routing key) on its base."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    routing_keys: ClassVar[Mapping[str, str]] = {}

    event_id: UUID
    schema_version: int = Field(ge=1)
    aggregate: Id
    aggregate_id: Id
    version: int = Field(ge=1, le=2**53, description="The aggregate's version after this event")
    occurred_at: datetime
    correlation_id: Id | None = None
    causation_id: Id | None = None

    @property
    def routing_key(self) -> str:
        return self.routing_keys[self.type]  # type: ignore[attr-defined]
