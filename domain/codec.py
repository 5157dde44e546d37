"""The stored form of domain events: type name, schema version and JSON-ready data.

It lives in the domain because it is part of the domain's history: an old event must always
be readable. One `EventCodec` per aggregate or workflow, built from its event dataclasses:

* Decimals are stored as strings, so no amount ever passes through a float;
* nested frozen dataclasses become objects, tuples become lists, and back;
* upcasters turn an older schema version into the current one when an event is read,
  chained v1 → v2 → … before anything folds it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, Generic, TypeVar

Event = TypeVar("Event")
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UnknownEventType(ValueError):
    def __init__(self, event_type: str) -> None:
        super().__init__(f"unknown event type {event_type!r}")
        self.event_type = event_type


class UnknownSchemaVersion(ValueError):
    """A stored event newer than this code knows: never folded as if it were current."""

    def __init__(self, event_type: str, schema_version: int, current: int) -> None:
        super().__init__(
            f"event type {event_type!r} has schema version {schema_version}, but this code "
            f"knows versions up to {current}: upgrade before reading it"
        )
        self.event_type = event_type
        self.schema_version = schema_version


def event_type_name(event: object) -> str:
    return type(event).__name__


def _to_json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_to_json(item) for item in value]
    return value


def _from_json(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _from_json(options[0], value) if len(options) == 1 else value
    if origin is tuple:
        item_hint = typing.get_args(hint)[0]
        return tuple(_from_json(item_hint, item) for item in value)
    if hint is Decimal:
        return Decimal(value)
    if hint is int and not isinstance(value, bool):
        return int(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value)
    return value


_FIELD_HINTS: dict[type[Any], tuple[tuple[str, Any], ...]] = {}


def _field_hints(cls: type[Any]) -> tuple[tuple[str, Any], ...]:
    """A dataclass's fields with their resolved types. Cached: `get_type_hints` evaluates
    every string annotation (compile + eval) on each call, and every stored event read
    went through it — a sixth of a busy worker's time (cProfile of the demo)."""
    cached = _FIELD_HINTS.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls)
        cached = tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))
        _FIELD_HINTS[cls] = cached
    return cached


def _build(cls: type[Any], data: Mapping[str, Any]) -> Any:
    return cls(**{name: _from_json(hint, data[name]) for name, hint in _field_hints(cls)})


class EventCodec(Generic[Event]):
    """Stored form ⇄ event dataclass for one aggregate's or workflow's event types."""

    def __init__(
        self,
        event_types: Iterable[type[Event]],
        *,
        schema_versions: Mapping[str, int] | None = None,
        upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
    ) -> None:
        self.event_types: dict[str, type[Event]] = {cls.__name__: cls for cls in event_types}
        self.current_schema_version: dict[str, int] = {
            name: (schema_versions or {}).get(name, 1) for name in self.event_types
        }
        self.upcasters: dict[tuple[str, int], Upcaster] = dict(upcasters or {})

    def knows(self, event_type: str) -> bool:
        return event_type in self.event_types

    def to_data(self, event: Event) -> dict[str, Any]:
        data = _to_json(event)
        assert isinstance(data, dict)
        return data

    def schema_version_of(self, event: Event) -> int:
        return self.current_schema_version[event_type_name(event)]

    def from_data(self, event_type: str, schema_version: int, data: Mapping[str, Any]) -> Event:
        cls = self.event_types.get(event_type)
        if cls is None:
            raise UnknownEventType(event_type)
        current_version = self.current_schema_version[event_type]
        if schema_version > current_version:
            raise UnknownSchemaVersion(event_type, schema_version, current_version)
        current = dict(data)
        for version in range(schema_version, current_version):
            current = self.upcasters[(event_type, version)](current)
        event: Event = _build(cls, current)
        return event
