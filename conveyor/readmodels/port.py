"""The read-model store port: JSON documents in named collections, with compare-and-set.

Every document has a revision (`rev`): 1 after it is first written, +1 on every write.
`put(expected_rev=…)` writes only if the stored revision is still the one the caller read
(0 = "must not exist yet"), in one atomic single-document write — so a projection's guard
(the versions it has applied, kept inside the document) and its update can never be
separated by another writer. Projection state, checkpoints and leases are documents too.

Queries are deliberately small: equality on top-level fields, an optional "strictly
before" bound on one top-level field, ordering by a top-level field, and a limit. Each
collection declares the field tuples it is queried by (`ensure_collection`), and adapters
index them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from conveyor.store_failures import StoreRefusedWrite, StoreUnavailable

Body = dict[str, Any]

COLLECTION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    rev: int
    body: Body


class RevisionConflict(Exception):
    """The document's revision was not the expected one: someone else wrote it first."""

    def __init__(self, collection: str, doc_id: str, expected_rev: int) -> None:
        super().__init__(
            f"{collection}/{doc_id}: expected revision {expected_rev}, but it was written "
            "by someone else"
        )
        self.collection = collection
        self.doc_id = doc_id
        self.expected_rev = expected_rev


class ReadStoreUnavailable(StoreUnavailable):
    """The read-model store could not be reached or did not answer: transient."""


class DocumentRejected(StoreRefusedWrite):
    """The store refused a document for what it is (over its size limit, failing its
    validation): permanent, no retry of the same write can succeed."""


def check_collection_name(name: str) -> str:
    if not COLLECTION_NAME.match(name):
        raise ValueError(
            f"collection name {name!r} must match {COLLECTION_NAME.pattern} "
            "(lowercase letters, digits, underscores)"
        )
    return name


class ReadModelStore(Protocol):
    async def ensure_collection(
        self, collection: str, indexes: Sequence[tuple[str, ...]] = ()
    ) -> None:
        """Create the collection and its indexes if missing (idempotent)."""
        ...

    async def get(self, collection: str, doc_id: str) -> Document | None: ...

    async def get_many(self, collection: str, doc_ids: Sequence[str]) -> dict[str, Document]:
        """The documents that exist among `doc_ids`, by id."""
        ...

    async def put(
        self,
        collection: str,
        doc_id: str,
        body: Body,
        *,
        expected_rev: int,
        where: Mapping[str, Any] | None = None,
    ) -> int:
        """Write `body` if the stored revision is `expected_rev` (0: the document must not
        exist) and, with `where` (only when updating), the stored top-level fields equal
        it, compared as `find` compares. Returns the new revision; raises RevisionConflict
        otherwise."""
        ...

    async def put_many(self, collection: str, documents: Mapping[str, Body]) -> None:
        """Unconditional bulk upsert (rebuilds write into a collection nobody else writes)."""
        ...

    async def find(
        self,
        collection: str,
        *,
        where: Mapping[str, Any] | None = None,
        before: tuple[str, Any] | None = None,
        order_by: str | None = None,
        descending: bool = False,
        limit: int = 100,
    ) -> list[Document]:
        """Documents whose top-level fields equal `where`, whose `before[0]` field is
        strictly less than `before[1]`, ordered by `order_by` (then id), at most `limit`."""
        ...

    async def count(self, collection: str, *, where: Mapping[str, Any] | None = None) -> int: ...

    async def drop_collection(self, collection: str) -> None:
        """Remove the collection and its documents (no error if missing)."""
        ...

    async def list_collections(self) -> list[str]: ...

    async def ping(self) -> None:
        """Raise ReadStoreUnavailable unless the store answers a real request."""
        ...

    async def server_time(self) -> float:
        """The store's clock, in seconds since the epoch: the one clock every process
        sharing the store agrees on, which leases expire by."""
        ...

    async def close(self) -> None: ...
