"""How an aggregate's state is kept as a snapshot: pure functions and a schema version.

A snapshot is a cache of a fold, never a source of truth. Its `schema_version` names the
shape of the data `to_data` writes; change the shape (or what the fold computes) and bump
it: a snapshot of another version is then ignored and the stream folded in full, never
read in a stale shape. There are no snapshot upcasters on purpose — a new snapshot is one
fold away.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

State = TypeVar("State")
Event = TypeVar("Event")


@dataclass(frozen=True, slots=True)
class SnapshotCodec(Generic[State, Event]):
    schema_version: int
    to_data: Callable[[State], dict[str, Any]]
    """The state as JSON-ready data (what the store keeps)."""
    from_data: Callable[[Mapping[str, Any]], State]
    """Back to the state; raises (KeyError, TypeError, ValueError) on data it cannot read."""
    resume: Callable[[State, Iterable[Event]], State]
    """The state after folding more events onto a state read from a snapshot."""
