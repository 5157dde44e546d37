"""Every field of a command on the wire is bounded before it costs anything, ids have one
alphabet and one Unicode spelling, and integration events are bounded likewise."""

from __future__ import annotations

import json
import time
import unicodedata
import uuid
from typing import Any

import pytest

from conveyor.aggregates import AGGREGATES
from conveyor.aggregates.orders import ORDERS
from messaging.command_messages import InvalidCommandMessage, parse_command
from messaging.integration_events import NotAnIntegrationEvent, decode


def _parse(body: dict[str, Any], **properties: Any) -> Any:
    return parse_command(
        json.dumps(body).encode(), aggregate=ORDERS, **{"message_id": "m-1", **properties}
    )


def _refused(body: dict[str, Any], *fragments: str, **properties: Any) -> str:
    started = time.perf_counter()
    with pytest.raises(InvalidCommandMessage) as raised:
        _parse(body, **properties)
    assert time.perf_counter() - started < 0.05
    assert raised.value.error_type == "SchemaError"
    for fragment in fragments:
        assert fragment in raised.value.message, raised.value.message
    return raised.value.message


CREATE = {"type": "CreateOrder", "order_id": "o-1", "customer_id": "alice"}
ADD = {"type": "AddItem", "order_id": "o-1", "sku": "S-1", "quantity": 1, "unit_price": "9.99"}


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("order_id", "o-1\x00", "U+0000"),
        ("order_id", "o-1\nFAKE LOG LINE", "U+000A"),
        ("customer_id", "alice\u200b", "U+200B ZERO WIDTH SPACE"),
        ("customer_id", "al ice", "U+0020 SPACE"),
        ("customer_id", "\x1b[31mred", "U+001B"),
        ("order_id", "x" * 201, "at most 200"),
    ],
)
def test_ids_outside_the_alphabet_are_refused_with_the_character_named(
    field: str, value: str, shown: str
) -> None:
    _refused({**CREATE, field: value}, field, shown)


def test_ids_are_normalised_to_nfc_so_one_name_is_one_customer() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert composed != decomposed
    first = _parse({**CREATE, "customer_id": composed}).command
    second = _parse({**CREATE, "customer_id": decomposed}).command
    assert first.customer_id == second.customer_id == unicodedata.normalize("NFC", decomposed)
    assert _parse(
        {**CREATE, "customer_id": "Ünïcödé-客户_7@x.org"}
    ).command  # letters of any script


def test_amqp_ids_standing_in_for_body_fields_obey_the_same_rules() -> None:
    _refused(CREATE, "AMQP message_id", "U+000A", message_id="c-1\nINFO forged")
    _refused(CREATE, "AMQP correlation_id", "U+0000", correlation_id="k\x00")
    envelope = _parse(CREATE, message_id=str(uuid.uuid4()), correlation_id="corr-1")
    assert envelope.correlation_id == "corr-1"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"unit_price": "9" * 200_000}, "digits"),
        ({"unit_price": "1e999999"}, "digits"),
        ({"unit_price": "1e20"}, "less than or equal"),
        ({"quantity": 10**12}, "less than or equal"),
        ({"quantity": -(10**12)}, "greater than or equal"),
    ],
)
def test_numbers_are_capped_in_the_schema(changes: dict[str, Any], fragment: str) -> None:
    _refused({**ADD, **changes}, fragment)


def test_values_inside_the_caps_still_reach_the_domain_rules() -> None:
    # Out of the business range but inside the wire's: a rejection with a reason, later.
    assert _parse({**ADD, "quantity": 5000, "unit_price": "9.999"}).command.quantity == 5000


def test_free_text_refuses_control_characters() -> None:
    cancel = {"type": "CancelOrder", "order_id": "o-1"}
    _refused({**cancel, "reason": "ok\x1b]0;pwned\x07"}, "reason", "U+001B")
    assert _parse({**cancel, "reason": "changed my mind, sorry — ünïcode ok"}).command


def test_integration_events_are_bounded_too() -> None:
    event = {
        "event_id": str(uuid.uuid4()),
        "type": "OrderCreated",
        "schema_version": 1,
        "order_id": "o-1",
        "customer_id": "c-1",
        "version": 1,
        "occurred_at": "2026-01-01T00:00:00Z",
        "data": {"customer_id": "c-1"},
    }
    assert decode(json.dumps(event).encode(), AGGREGATES).order_id == "o-1"
    for broken in (
        {**event, "order_id": "o" * 300},
        {**event, "version": 10**30},
        {**event, "data": {"customer_id": "c" * 300}},
    ):
        with pytest.raises(NotAnIntegrationEvent):
            decode(json.dumps(broken).encode(), AGGREGATES)
