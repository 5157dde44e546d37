"""The SQLite event store's decoding shortcuts return exactly what the plain way does:
UUID(text), json.loads(text) and parse_time(text) — values and errors alike."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.eventstore.serialization import format_time, parse_time
from conveyor.eventstore.sqlite import _loads, _time, _uuid


def _outcome(call: object, text: str) -> object:
    try:
        return ("ok", call(text))  # type: ignore[operator]
    except ValueError as error:  # JSONDecodeError is one
        return ("error", type(error), str(error))


def test_uuids() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        text = str(uuid.UUID(int=rng.getrandbits(128)))
        for form in (text, text.upper()):
            fast, plain = _uuid(form), uuid.UUID(form)
            assert (fast, fast.is_safe, hash(fast), str(fast)) == (
                plain,
                plain.is_safe,
                hash(plain),
                str(plain),
            )
    odd = (
        "x" * 36,
        "{" + "a" * 34 + "}",
        "urn:uuid:" + "a" * 27,
        "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaa_",
        "{12345678-1234-5678-1234-567812345678}",
        "urn:uuid:12345678-1234-5678-1234-567812345678",
        "",
    )
    for text in odd:
        assert _outcome(_uuid, text) == _outcome(uuid.UUID, text), text


def test_times() -> None:
    rng = random.Random(4)
    for _ in range(2000):
        text = format_time(
            datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(10**14))
        )
        fast, plain = _time(text), parse_time(text)
        assert (fast, fast.tzinfo) == (plain, plain.tzinfo)
    for text in ("2026-01-01T00:00:00+02:00", "2026-01-01T00:00:00", "2026-01-01T00:00:00Z"):
        fast, plain = _time(text), parse_time(text)
        assert (fast, fast.utcoffset()) == (plain, plain.utcoffset())


@pytest.mark.parametrize(
    "text",
    [
        '{"a":1}',
        ' {"a":1}',
        '{"a":1} ',
        "[1,2]",
        '"x"',
        '{"a": [1, {"b": null}]}',
        "{}",
        '{"a":',
        "",
        "nan",
        '{"a":1}x',
        "NaN",
        '{"é":"ü"}',
    ],
)
def test_json(text: str) -> None:
    assert _outcome(_loads, text) == _outcome(json.loads, text)
