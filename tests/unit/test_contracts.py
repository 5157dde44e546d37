"""The published contracts: the AsyncAPI document, the JSON Schemas under docs/schemas and
the README's examples of commands and integration events."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conveyor.aggregates import AGGREGATES
from conveyor.aggregates.orders import ORDERS
from conveyor.application.aggregates import AggregateDefinition
from conveyor.asyncapi import (
    document,
    json_schema_texts,
    write_json_schemas,
)
from conveyor.settings import Settings
from messaging.command_messages import InvalidCommandMessage, parse_command
from messaging.contracts.orders import COMMAND_MESSAGES as COMMAND_MODELS
from messaging.contracts.orders import CONTRACT_VERSION, EVENT_MODELS, ROUTING_KEYS
from messaging.integration_events import decode

REPLY_CHANNEL = "orders.commands:reply"

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "schemas"
# The official JSON Schema of AsyncAPI 3.0.0 (see tests/schemas/README.md).
ASYNCAPI_SCHEMAS = {"3.0.0": ROOT / "tests" / "schemas" / "asyncapi-3.0.0-without-id.json"}
# What the checked-in document is generated with (`conveyor asyncapi` with no CONVEYOR_*).
DEFAULTS = Settings(
    amqp_url="amqp://guest:guest@127.0.0.1:5672/",
    command_queue="orders.commands",
    projection_queue_prefix="projections",
)


def test_the_asyncapi_document_names_every_channel_and_schema() -> None:
    spec = document(DEFAULTS)
    assert spec["asyncapi"] == "3.0.0"
    # The reply channel's address is null: whatever queue a command's reply_to names.
    addresses = {channel["address"] for channel in spec["channels"].values()} - {None}
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
        event = decode(json.dumps(example).encode(), AGGREGATES)
        types.add(event.type)
    # every Order event (its consumers' reference), and examples of every other aggregate
    assert set(ROUTING_KEYS) <= types
    assert {AGGREGATES.of_event_type(t).name for t in types} == {d.name for d in AGGREGATES}  # type: ignore[union-attr]


# --------------------------------------------------------------- AsyncAPI against its spec


@cache
def asyncapi_validator(version: str) -> jsonschema.Draft7Validator:
    schema = json.loads(ASYNCAPI_SCHEMAS[version].read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def asyncapi_errors(spec: dict[str, Any]) -> list[str]:
    validator = asyncapi_validator(spec["asyncapi"])
    return [
        f"{'/'.join(str(p) for p in error.absolute_path)}: {error.message[:300]}"
        for error in validator.iter_errors(spec)
    ]


def test_the_asyncapi_document_is_valid_against_the_official_schema() -> None:
    checked_in = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    assert asyncapi_errors(checked_in) == []
    custom = Settings(command_queue="shop.commands", projection_queue_prefix="shop")
    assert asyncapi_errors(json.loads(json.dumps(document(custom)))) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda spec: spec.pop("info"),
        lambda spec: spec["operations"]["orders.commands"].update(action="consume"),
        lambda spec: spec["operations"]["orders.commands"]["reply"]["address"].update(
            location="reply_to"
        ),
        lambda spec: spec["channels"]["orders.commands"].update(adress="typo"),
    ],
)
def test_the_schema_check_catches_a_broken_document(breakage: Any) -> None:
    spec = copy.deepcopy(json.loads(json.dumps(document(DEFAULTS))))
    breakage(spec)
    assert asyncapi_errors(spec)


def _message_payloads(spec: dict[str, Any], channel: dict[str, Any]) -> set[str]:
    """The component schema names a channel's messages carry (one level of anyOf/oneOf)."""
    names = set()
    for ref in channel["messages"].values():
        message = spec["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
        payload = message["payload"]["$ref"].rsplit("/", 1)[1]
        schema = spec["components"]["schemas"][payload]
        members = schema.get("anyOf") or schema.get("oneOf") or [{"$ref": "#/x/" + payload}]
        names |= {member["$ref"].rsplit("/", 1)[1] for member in members}
    return names


def test_the_asyncapi_document_covers_commands_outcomes_replies_and_events() -> None:
    spec = json.loads(json.dumps(document(DEFAULTS)))
    channels = spec["channels"]
    operations = spec["operations"]

    commands = channels["orders.commands"]
    assert commands["bindings"]["amqp"]["is"] == "queue"
    assert operations["orders.commands"]["action"] == "receive"
    assert _message_payloads(spec, commands) == {
        model.__name__ for model in COMMAND_MODELS.values()
    }
    for model in COMMAND_MODELS.values():
        assert spec["components"]["schemas"][model.__name__]["additionalProperties"] is False

    reply = operations["orders.commands"]["reply"]
    assert reply["channel"] == {"$ref": f"#/channels/{REPLY_CHANNEL}"}
    assert channels[REPLY_CHANNEL]["address"] is None
    assert _message_payloads(spec, channels[REPLY_CHANNEL]) == {"CommandOutcome"}

    for status in ("accepted", "duplicate", "rejected"):
        name = f"conveyor.command-outcomes:orders.command.{status}"
        assert channels[name]["address"] == f"orders.command.{status}"
        assert channels[name]["bindings"]["amqp"]["exchange"]["type"] == "topic"
        assert operations[name]["action"] == "send"
        assert operations[name]["bindings"]["amqp"]["deliveryMode"] == 2
        assert _message_payloads(spec, channels[name]) == {"CommandOutcome"}

    for event_type, routing_key in ROUTING_KEYS.items():
        name = f"conveyor.events:{routing_key}"
        assert channels[name]["address"] == routing_key
        assert channels[name]["bindings"]["amqp"]["exchange"]["name"] == "conveyor.events"
        assert operations[name]["action"] == "send"
        assert operations[name]["bindings"]["amqp"]["deliveryMode"] == 2  # persistent
        assert _message_payloads(spec, channels[name]) == {EVENT_MODELS[event_type].__name__}


# --------------------------------------------------------------- published JSON Schemas


def test_the_checked_in_json_schemas_are_current(tmp_path: Path) -> None:
    expected = json_schema_texts()
    checked_in = {
        path.relative_to(SCHEMAS).as_posix(): path.read_text() for path in SCHEMAS.rglob("*.json")
    }
    assert sorted(checked_in) == sorted(expected), (
        "docs/schemas is stale: run `conveyor asyncapi -o docs/asyncapi.json "
        "--schemas docs/schemas`"
    )
    for path, text in expected.items():
        assert checked_in[path] == text, f"docs/schemas/{path} is stale"
    written = write_json_schemas(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in written} == set(expected)


def test_there_is_a_schema_per_command_and_per_integration_event() -> None:
    names = set(json_schema_texts())
    assert {f"commands/{t}.json" for t in COMMAND_MODELS} <= names
    assert {f"integration-events/{t}.v{CONTRACT_VERSION}.json" for t in ROUTING_KEYS} <= names
    assert "commands/Command.json" in names


@cache
def schema_validator(relative: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / relative).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    # no network: every schema is self-contained
    assert "$ref" not in json.dumps(schema).replace('"$ref": "#/', "")
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def readme_command_examples() -> list[dict[str, Any]]:
    readme = (ROOT / "README.md").read_text()
    try_it = readme.split("## Try it", 1)[1].split("\n## ", 1)[0]
    on_the_wire = readme.split("## Commands on the wire", 1)[1].split("\n## ", 1)[0]
    examples = [
        json.loads(block)
        for section in (try_it, on_the_wire)
        for block in re.findall(r"```json\n(.*?)```", section, re.S)
    ]
    examples += [json.loads(sent) for sent in re.findall(r"conveyor send '(\{.*?\})'", readme)]
    return examples


def readme_event_examples() -> list[dict[str, Any]]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Integration events", 1)[1].split("\n## ", 1)[0]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]


def schema_base(definition: AggregateDefinition) -> str:
    return "" if definition is AGGREGATES.default else f"{definition.name}/"


def test_every_readme_command_example_validates_against_the_published_schemas() -> None:
    examples = readme_command_examples()
    assert {example["type"] for example in examples} >= {
        "CreateOrder",
        "AddItem",
        "ReceiveStock",
        "ReserveStock",
        "AuthorizePayment",
        "DeclinePayment",
    }
    for example in examples:
        definition = AGGREGATES.of_command_type(example["type"])
        assert definition is not None, example
        base = schema_base(definition)
        for schema in (f"{base}commands/Command.json", f"{base}commands/{example['type']}.json"):
            errors = [e.message for e in schema_validator(schema).iter_errors(example)]
            assert errors == [], (schema, example)
        parse_command(
            json.dumps(example).encode(), aggregate=definition, message_id="m-1"
        )  # and the code agrees


def test_every_readme_event_example_validates_against_its_published_schema() -> None:
    examples = readme_event_examples()
    assert {example["type"] for example in examples} >= set(ROUTING_KEYS)
    for example in examples:
        definition = AGGREGATES.of_event_type(example["type"])
        assert definition is not None, example
        schema = (
            f"{schema_base(definition)}integration-events/"
            f"{example['type']}.v{example['schema_version']}.json"
        )
        assert list(schema_validator(schema).iter_errors(example)) == [], example


VALID_ADD = {"type": "AddItem", "order_id": "o-1", "sku": "S", "quantity": 2, "unit_price": "9.99"}


@pytest.mark.parametrize(
    ("change", "remove"),
    [
        ({"colour": "red"}, None),  # unknown fields are refused, not ignored
        ({}, "sku"),
        ({"quantity": "two"}, None),
        ({"quantity": 1.5}, None),
        ({"order_id": ""}, None),
        ({"type": "ShipOrder"}, None),
        ({"command_id": 7}, None),
    ],
)
def test_an_invalid_command_fails_the_schema_and_the_code(
    change: dict[str, Any], remove: str | None
) -> None:
    example = {**VALID_ADD, **change}
    if remove:
        del example[remove]
    assert not schema_validator("commands/Command.json").is_valid(example)
    with pytest.raises(InvalidCommandMessage):
        parse_command(json.dumps(example).encode(), aggregate=ORDERS, message_id="m-1")


def test_unknown_command_fields_are_refused_with_their_name() -> None:
    body = json.dumps({**VALID_ADD, "quantitiy": 3}).encode()
    with pytest.raises(InvalidCommandMessage) as raised:
        parse_command(body, aggregate=ORDERS, message_id="m-1")
    assert raised.value.error_type == "SchemaError"
    assert "quantitiy" in raised.value.message
    assert not schema_validator("commands/AddItem.json").is_valid(json.loads(body))


@pytest.mark.parametrize(
    "breakage",
    [
        lambda event: event.pop("customer_id"),
        lambda event: event.update(event_id="not-a-uuid"),
        lambda event: event.update(version=0),
        lambda event: event["data"].update(unit_price="9,99"),
        lambda event: event.update(type="OrderCreated"),
    ],
)
def test_an_invalid_integration_event_fails_its_schema(breakage: Any) -> None:
    [item_added] = [e for e in readme_event_examples() if e["type"] == "ItemAdded"]
    event = copy.deepcopy(item_added)
    breakage(event)
    assert not schema_validator("integration-events/ItemAdded.v1.json").is_valid(event)


def test_integration_event_schemas_let_the_contract_grow() -> None:
    [created] = [e for e in readme_event_examples() if e["type"] == "OrderCreated"]
    grown = {**created, "channel": "web", "data": {**created["data"], "note": "x"}}
    assert schema_validator("integration-events/OrderCreated.v1.json").is_valid(grown)


# --------------------------------------------------------------- Inventory and Payment


@pytest.mark.parametrize("name", ["inventory", "payment"])
def test_every_aggregate_has_its_queue_events_and_schemas_in_the_document(name: str) -> None:
    definition = AGGREGATES.named(name)
    spec = json.loads(json.dumps(document(DEFAULTS)))
    queue = definition.command_queue
    assert spec["channels"][queue]["address"] == queue
    assert spec["operations"][queue]["action"] == "receive"
    assert _message_payloads(spec, spec["channels"][queue]) == {
        model.__name__ for model in definition.commands.values()
    }
    names = set(json_schema_texts())
    for event_type, routing_key in definition.contract.routing_keys.items():
        assert routing_key.startswith(definition.contract.routing_key_prefix)
        channel = spec["channels"][f"conveyor.events:{routing_key}"]
        assert channel["address"] == routing_key
        assert _message_payloads(spec, channel) == {definition.contract.events[event_type].__name__}
        assert f"{name}/integration-events/{event_type}.v1.json" in names
        contract = json.loads(
            json_schema_texts()[f"{name}/integration-events/{event_type}.v1.json"]
        )
        assert {"aggregate", "aggregate_id", "version", "event_id"} <= set(contract["required"])
    for command_type in definition.commands:
        assert f"{name}/commands/{command_type}.json" in names


def test_a_refused_reservation_is_published_as_inventory_reservation_refused() -> None:
    inventory = AGGREGATES.named("inventory")
    assert inventory.contract.routing_keys["ReservationRefused"] == "inventory.reservation_refused"
    assert ORDERS.contract.routing_keys["OrderFulfilled"] == "orders.fulfilled"


@pytest.mark.parametrize(
    "body",
    [
        {"type": "ReserveStock", "sku": "S", "order_id": "o", "quantity": "2"},
        {"type": "ReserveStock", "sku": "S", "quantity": 2},
        {"type": "ReceiveStock", "sku": "S", "quantity": 10**10},
        {"type": "AuthorizePayment", "order_id": "o", "amount": 1.5e300, "provider_reference": "p"},
        {"type": "AuthorizePayment", "order_id": "o", "amount": "1", "provider_reference": ""},
        {"type": "DeclinePayment", "order_id": "o", "reason": "x", "colour": "red"},
    ],
    ids=repr,
)
def test_invalid_inventory_and_payment_commands_fail_the_schema_and_the_code(
    body: dict[str, Any],
) -> None:
    definition = AGGREGATES.of_command_type(body["type"])
    assert definition is not None
    assert not schema_validator(f"{definition.name}/commands/Command.json").is_valid(body)
    with pytest.raises(InvalidCommandMessage):
        parse_command(json.dumps(body).encode(), aggregate=definition, message_id="m-1")


def test_an_sku_with_a_control_character_is_invalid() -> None:
    """The id alphabet is the code's (JSON Schema cannot say it): as for Order's ids."""
    body = {"type": "ReceiveStock", "sku": "S\n", "quantity": 1}
    with pytest.raises(InvalidCommandMessage, match="U\\+000A"):
        parse_command(json.dumps(body).encode(), aggregate=AGGREGATES.named("inventory"))
