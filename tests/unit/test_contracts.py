"""The published contracts: the AsyncAPI document and the README's event examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conveyor.asyncapi import document
from conveyor.settings import Settings
from messaging.integration_events import ROUTING_KEYS, decode

ROOT = Path(__file__).resolve().parents[2]
# What the checked-in document is generated with (`conveyor asyncapi` with no CONVEYOR_*).
DEFAULTS = Settings(
    amqp_url="amqp://guest:guest@127.0.0.1:5672/",
    command_queue="orders.commands",
    projection_queue_prefix="projections",
)


def test_the_asyncapi_document_names_every_channel_and_schema() -> None:
    spec = document(DEFAULTS)
    assert spec["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in spec["channels"].values()}
    assert "orders.commands" in addresses
    for routing_key in ROUTING_KEYS.values():
        assert any(routing_key in address for address in addresses), routing_key
    schemas = json.dumps(spec["components"]["schemas"])
    for field in ("command_id", "unit_price", "event_id", "customer_id", "schema_version"):
        assert field in schemas
    assert "guest" not in json.dumps(spec)  # no credentials in a published document


def test_the_checked_in_asyncapi_document_is_current() -> None:
    checked_in = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    assert checked_in == json.loads(json.dumps(document(DEFAULTS))), (
        "docs/asyncapi.json is stale: run `conveyor asyncapi -o docs/asyncapi.json`"
    )


def test_every_readme_event_example_is_a_valid_integration_event() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Integration events", 1)[1].split("\n## ", 1)[0]
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]
    types = set()
    for example in examples:
        event = decode(json.dumps(example).encode())
        types.add(event.type)
    assert types == set(ROUTING_KEYS)
