"""Found by `make chaos` (scenario 7): JSON nested deeper than the decoder's stack raised
RecursionError, which escaped parse_command; the consumer then rejected the delivery and the
broker dead-lettered it without any x-conveyor-* reason headers."""

from __future__ import annotations

import pytest

from conveyor.aggregates.orders import ORDERS
from messaging.command_messages import InvalidCommandMessage, parse_command


def test_json_nested_too_deeply_is_invalid_input_with_a_reason() -> None:
    body = b"[" * 50_000 + b"]" * 50_000
    with pytest.raises(InvalidCommandMessage) as raised:
        parse_command(body, aggregate=ORDERS, message_id="m-1")
    assert raised.value.error_type == "MalformedJSON"
    assert "nested too deeply" in raised.value.message
