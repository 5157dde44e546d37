"""Log lines in both formats, with the ids of the message being handled."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from conveyor.observability.logs import MESSAGE_IDS, bind_message, configure_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def log_while_handling(logger: logging.Logger) -> None:
    token = MESSAGE_IDS.set((None, None))
    try:
        logger.info("before")
        bind_message("corr-1", "cmd-1")
        logger.info("handling %s", "o-1")
        logger.warning("explicit", extra={"correlation_id": "corr-explicit"})
    finally:
        MESSAGE_IDS.reset(token)
    logger.info("after")


@pytest.mark.usefixtures("restore_root")
def test_json_lines_carry_the_message_ids_while_handling() -> None:
    stream = io.StringIO()
    configure_logging("json", "INFO", stream)
    log_while_handling(logging.getLogger("conveyor.test"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["before", "handling o-1", "explicit", "after"]
    assert all(line["logger"] == "conveyor.test" and "time" in line for line in lines)
    assert [line["level"] for line in lines] == ["INFO", "INFO", "WARNING", "INFO"]
    assert "correlation_id" not in lines[0]
    assert "correlation_id" not in lines[3]
    assert (lines[1]["correlation_id"], lines[1]["causation_id"]) == ("corr-1", "cmd-1")
    assert (lines[2]["correlation_id"], lines[2]["causation_id"]) == ("corr-explicit", "cmd-1")


@pytest.mark.usefixtures("restore_root")
def test_text_lines_keep_the_plain_format_and_append_the_ids() -> None:
    stream = io.StringIO()
    configure_logging("text", "INFO", stream)
    log_while_handling(logging.getLogger("conveyor.test"))
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith(" INFO conveyor.test: before")
    assert lines[1].endswith(
        " INFO conveyor.test: handling o-1 [correlation_id=corr-1 causation_id=cmd-1]"
    )
    assert lines[3].endswith(" INFO conveyor.test: after")


@pytest.mark.usefixtures("restore_root")
def test_the_level_is_honoured() -> None:
    stream = io.StringIO()
    configure_logging("text", "WARNING", stream)
    log_while_handling(logging.getLogger("conveyor.test"))
    assert len(stream.getvalue().splitlines()) == 1


@pytest.mark.usefixtures("restore_root")
async def test_concurrent_deliveries_keep_their_own_ids() -> None:
    stream = io.StringIO()
    configure_logging("json", "INFO", stream)
    logger = logging.getLogger("conveyor.test")

    async def handle(n: int) -> None:
        bind_message(f"corr-{n}", f"cmd-{n}")
        await asyncio.sleep(0.01 * (3 - n))
        logger.info("message %d", n)

    await asyncio.gather(*(asyncio.create_task(handle(n)) for n in range(3)))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {line["message"]: line["correlation_id"] for line in lines} == {
        f"message {n}": f"corr-{n}" for n in range(3)
    }


@pytest.mark.usefixtures("restore_root")
def test_text_lines_escape_control_characters_so_ids_cannot_forge_lines() -> None:
    stream = io.StringIO()
    configure_logging("text", "INFO", stream)
    logger = logging.getLogger("conveyor.test.escape")
    forged = "o-1\n2026-01-01 00:00:00 INFO conveyor.commands command c-9 accepted"
    logger.warning("command %s rejected: \x1b[2J\x1b]0;pwned\x07 \u202egnp.exe", forged)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "\x1b" not in lines[0]
    assert "\u202e" not in lines[0]
    assert "o-1\\x0a2026-01-01" in lines[0]
    assert "\\x1b[2J" in lines[0]
    assert "\\u202e" in lines[0]
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("with a traceback")
    assert "Traceback" in stream.getvalue()  # tracebacks keep their lines
