"""`conveyor send`: publish a command, optionally wait for its outcome and read model."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from decimal import Decimal
from typing import Annotated, Any

import typer
from aiormq.exceptions import ChannelNotFoundEntity, PublishError

from conveyor.aggregates import AGGREGATES
from conveyor.bootstrap import command_queue, rabbit_broker
from conveyor.cli.app import console, fail, run_async
from conveyor.cli.stores import read_store
from conveyor.embedded.sqlite import SqliteFileMissing
from conveyor.queries.service import OrderQueries
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.settings import Settings
from messaging.command_consumer import COMMANDS_EXCHANGE


def send(
    command: Annotated[str, typer.Argument(help="The command as a JSON object.")],
    wait: Annotated[
        bool,
        typer.Option(help="Wait for the outcome, then for the order summary to reflect it."),
    ] = False,
    read_model: Annotated[
        bool, typer.Option(help="With --wait: also wait for the order summary (read-your-writes).")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 10.0,
) -> None:
    """Publish a command to the command queue (a command_id is added if missing)."""
    try:
        payload = json.loads(command, parse_float=Decimal)
    except ValueError as exc:
        fail(f"the command is not valid JSON: {exc}", 2)
    if not isinstance(payload, dict):
        fail("the command must be a JSON object", 2)
    payload.setdefault("command_id", str(uuid.uuid4()))
    body = json.dumps(payload, default=str).encode()
    # The queue of the aggregate that owns this command type (unknown types go to the first
    # aggregate's queue, whose worker dead-letters them with the reason, as before).
    owner = AGGREGATES.of_command_type(str(payload.get("type"))) or AGGREGATES.default

    async def main(settings: Settings) -> dict[str, Any] | None:
        queue = command_queue(settings, owner).name
        broker = rabbit_broker(settings, logger=None)
        async with broker:
            await broker.connect()
            options: dict[str, Any] = {
                # Through the command exchange: the only thing a producer may write to.
                "exchange": COMMANDS_EXCHANGE,
                "routing_key": queue,
                "content_type": "application/json",
                "message_id": payload["command_id"],
                "correlation_id": payload.get("correlation_id") or payload["command_id"],
                "persist": True,
            }
            try:
                if not wait:
                    await broker.publish(body, **options)
                    return None
                reply = await broker.request(body, timeout=timeout, **options)
            except (PublishError, ChannelNotFoundEntity):
                fail(
                    f"exchange {COMMANDS_EXCHANGE.name!r} or queue {queue!r} "
                    "does not exist: start the workers (conveyor run) once to declare them"
                )
            except TimeoutError:
                fail(
                    f"no outcome within {timeout:g}s for command {payload['command_id']}: it is "
                    "queued and will be processed when a worker runs",
                    3,
                )
            outcome: dict[str, Any] = json.loads(reply.body)
        # Read-your-writes on the aggregate's first read model (Order's order summary,
        # Inventory's stock levels); an aggregate without read models has nothing to wait for.
        if read_model and owner.read_models and outcome.get("status") in ("accepted", "duplicate"):
            outcome["read_model_caught_up"] = await _wait_for_read_model(
                settings,
                owner.read_models[0],
                outcome[owner.id_field],
                outcome["version"],
                deadline,
            )
        return outcome

    deadline = time.monotonic() + timeout
    outcome = run_async(main)
    if outcome is None:
        console.print(f"sent {payload.get('type')} command_id={payload['command_id']}")
        return
    print(json.dumps(outcome))
    if outcome.get("read_model_caught_up") is False:
        print(
            f"conveyor: the {owner.read_models[0].replace('_', ' ')} did not reach version "
            f"{outcome['version']} within "
            f"{timeout:g}s (are the projection workers running?)",
            file=sys.stderr,
        )
    if outcome.get("status") == "rejected":
        raise typer.Exit(4)


async def _wait_for_read_model(
    settings: Settings, projection: str, doc_id: str, version: int, deadline: float
) -> bool:
    """Read-your-writes: poll the read model until it shows `version` or time runs out."""
    while True:
        try:
            async with read_store(settings, read_only=True, announce=False) as store:
                queries = OrderQueries(store, ProjectionCollections(store, cache_seconds=0))
                while True:
                    summary = await queries.document(projection, doc_id)
                    if summary is not None and summary["version"] >= version:
                        return True
                    if time.monotonic() >= deadline:
                        return False
                    await asyncio.sleep(0.02)
        except SqliteFileMissing:  # no projection worker has run yet: as not caught up
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)
