"""Inputs bounded before they cost (issue 18, part 2), against the real RabbitMQ: the DLQs
refuse more than their byte limit, dead-letter copies of oversized messages are cut to the
limit, and projections refuse oversized events as commands do."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from conveyor.bootstrap import command_queue
from conveyor.settings import Settings
from messaging import failures
from tests.rabbit import Management, eventually

pytestmark = pytest.mark.rabbitmq
ROOT = Path(__file__).resolve().parents[2]


async def test_a_full_dead_letter_queue_refuses_new_dead_letters(amqp_url: str) -> None:
    settings = Settings(
        amqp_url=amqp_url,
        command_queue=f"orders.commands.{uuid.uuid4().hex[:8]}",
        dead_letter_max_bytes=4096,
    )
    dlq = command_queue(settings).dead_letters()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(dlq.name, durable=True, arguments=dlq.arguments)
        accepted = 0

        async def fill() -> None:
            nonlocal accepted
            for _ in range(20):
                await channel.default_exchange.publish(
                    aio_pika.Message(b"x" * 1000), routing_key=dlq.name
                )
                accepted += 1

        try:
            with pytest.raises(aio_pika.exceptions.DeliveryError):
                await fill()
            # A quorum queue refuses once it is over the limit: at most one message beyond.
            assert accepted <= 5
        finally:
            await channel.queue_delete(dlq.name, if_unused=False, if_empty=False)


async def _dead_letter(management: Management, vhost: str, queue: str) -> dict[str, Any]:
    letters = await eventually(
        lambda: management.peek(vhost, f"{queue}.dlq"), within=30, what=f"a dead letter in {queue}"
    )
    assert len(letters) == 1
    return letters[0]


async def test_oversized_commands_and_events_are_dead_lettered_cut_to_the_limit(
    settings: Settings,
    start_worker: Any,
    amqp_url: str,
    management: Management,
    test_vhost: str,
) -> None:
    settings = settings.model_copy(update={"max_message_bytes": 2048})
    await start_worker(settings, ("commands", "projections"))
    big = b'{"type": "CreateOrder", "order_id": "' + b"x" * 100_000 + b'"}'
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(big, message_id="big-command"), routing_key=settings.command_queue
        )
        events = await channel.get_exchange("conveyor.events")
        await events.publish(
            aio_pika.Message(big, message_id="big-event", user_id="guest"),
            routing_key="orders.created",
        )
    command = await _dead_letter(management, test_vhost, settings.command_queue)
    summary = f"{settings.projection_queue_prefix}.order_summary"
    event = await _dead_letter(management, test_vhost, summary)
    for letter in (command, event):
        headers = letter["properties"]["headers"]
        assert headers[failures.ERROR_TYPE] == "MessageTooLarge"
        assert headers[failures.ORIGINAL_SIZE] == len(big)
        assert letter["payload_bytes"] == 2048


def test_the_shipped_broker_config_refuses_large_messages_before_a_worker_reads_them() -> None:
    config = (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text()
    found = re.search(r"^max_message_size\s*=\s*(\d+)\s*$", config, re.MULTILINE)
    assert found, "deploy/rabbitmq/rabbitmq.conf sets no max_message_size"
    limit = int(found.group(1))
    assert Settings().max_message_bytes < limit <= 4 * 1024 * 1024


async def test_a_dead_letter_queue_from_an_earlier_version_is_kept_with_a_warning(
    settings: Settings, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redeclaring a queue with new arguments fails (PRECONDITION_FAILED): an upgrade must
    not stop the workers from starting."""
    from conveyor.bootstrap import build_broker, declare_topology

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(
            f"{settings.command_queue}.dlq", durable=True, arguments={"x-queue-type": "quorum"}
        )
    broker = build_broker(settings)
    async with broker:
        await broker.connect()
        await declare_topology(settings, broker, commands=True, events=False)
    assert "declared without a size limit" in caplog.text
    assert "rabbitmqctl set_policy" in caplog.text
