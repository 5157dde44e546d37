"""Log lines of a worker process: text (the default) or one JSON object per line, each
carrying the correlation and causation ids of the message being handled.

A consumer binds the ids of the delivery it handles (`bind_message`, a context variable:
every delivery runs in its own task), and the handler's `MessageIdsFilter` stamps them on
every record logged meanwhile — by conveyor or by a library — unless the call passed its
own `extra`.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import IO, Literal

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

MESSAGE_IDS: ContextVar[tuple[str | None, str | None]] = ContextVar(
    "conveyor_message_ids", default=(None, None)
)
"""(correlation_id, causation_id) of the message the current task is handling."""


def bind_message(correlation_id: str | None, causation_id: str | None) -> None:
    """The ids to stamp on this task's log lines until the consumer resets them."""
    MESSAGE_IDS.set((correlation_id, causation_id))


class MessageIdsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        correlation_id, causation_id = MESSAGE_IDS.get()
        if correlation_id is not None and not hasattr(record, "correlation_id"):
            record.correlation_id = correlation_id
        if causation_id is not None and not hasattr(record, "causation_id"):
            record.causation_id = causation_id
        return True


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


# C0 and C1 controls (newline, ESC…), DEL, and the invisible format characters that
# reorder or hide text on a terminal (bidi overrides, zero-width spaces).
_CONTROLS = {
    code: _escape(chr(code))
    for code in (
        *range(0x20),
        *range(0x7F, 0xA0),
        0xAD,
        *range(0x200B, 0x2010),
        *range(0x202A, 0x202F),
        *range(0x2060, 0x2070),
        0xFEFF,
    )
}


def escape_controls(text: str) -> str:
    """`text` safe for one terminal line: controls shown as \\xNN / \\uNNNN, so a newline
    in an id cannot forge a log line and an escape sequence cannot drive the terminal."""
    return text.translate(_CONTROLS)


class TextFormatter(logging.Formatter):
    """The plain format, with the message ids appended when there are any. Everything
    but the traceback stays on one line: control characters are escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        correlation_id = getattr(record, "correlation_id", None)
        causation_id = getattr(record, "causation_id", None)
        if correlation_id is not None or causation_id is not None:
            line = f"{line} [correlation_id={correlation_id} causation_id={causation_id}]"
        return escape_controls(line)


def log_handler(
    log_format: Literal["text", "json"] = "text", stream: IO[str] | None = None
) -> logging.Handler:
    """A handler writing `stream` (stderr by default) in the given format, with the ids."""
    handler = logging.StreamHandler(stream)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(TextFormatter(TEXT_FORMAT))
    handler.addFilter(MessageIdsFilter())
    return handler


def configure_logging(
    log_format: Literal["text", "json"] = "text",
    level: str = "INFO",
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Make the root logger write through one `log_handler` at `level` (replacing any
    handlers it had); returns that handler."""
    handler = log_handler(log_format, stream)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return handler
