"""The behaviour every read-model store adapter must show. Collection names are unique per
test, and dropped afterwards, so the suite can run against a shared server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from conveyor.readmodels.port import Document, ReadModelStore, RevisionConflict

NewCollection = Callable[[], str]


@pytest.fixture
async def new_collection(read_store: ReadModelStore) -> AsyncIterator[NewCollection]:
    """Mints collection names no other test (or run) uses, and drops them afterwards."""
    names: list[str] = []

    def mint() -> str:
        names.append(f"t_{uuid.uuid4().hex}")
        return names[-1]

    yield mint
    for name in names:
        await read_store.drop_collection(name)


@pytest.fixture
async def collection(read_store: ReadModelStore, new_collection: NewCollection) -> str:
    name = new_collection()
    await read_store.ensure_collection(name, [("status", "created_at"), ("customer_id",)])
    return name


RICH_BODY: dict[str, Any] = {
    "status": "pending",
    "total": "1234.50",  # decimals travel as strings: no float rounding
    "count": 3,
    "big": 2**53 + 1,
    "negative": -7,
    "ratio": 0.25,
    "paid": False,
    "shipped": True,
    "note": None,
    "customer": {"name": "Zoë Ångström", "tags": ["vip", "北京"], "address": {"zip": "01234"}},
    "items": [{"sku": "SKU-1", "quantity": 2, "unit_price": "9.99"}, {"sku": "☕", "quantity": 1}],
    "empty_list": [],
    "empty_object": {},
    "dollar": "$total",  # must never be read as a field reference
    "emoji": "📦",
}


def ids(documents: list[Document]) -> list[str]:
    return [document.id for document in documents]


# -- single documents and revisions ------------------------------------------------------


async def test_put_then_get_round_trips_every_json_type(
    read_store: ReadModelStore, collection: str
) -> None:
    rev = await read_store.put(collection, "order-1", RICH_BODY, expected_rev=0)
    assert rev == 1
    document = await read_store.get(collection, "order-1")
    assert document == Document(id="order-1", rev=1, body=RICH_BODY)
    # bools stay bools and ints stay ints (JSON and BSON both have the distinction)
    assert document.body["paid"] is False
    assert type(document.body["count"]) is int


async def test_missing_document_reads_as_none(read_store: ReadModelStore, collection: str) -> None:
    assert await read_store.get(collection, "nobody") is None


async def test_every_write_increments_the_revision(
    read_store: ReadModelStore, collection: str
) -> None:
    assert await read_store.put(collection, "d", {"v": 1}, expected_rev=0) == 1
    assert await read_store.put(collection, "d", {"v": 2}, expected_rev=1) == 2
    assert await read_store.put(collection, "d", {"w": 3}, expected_rev=2) == 3
    # the body is replaced, not merged
    assert await read_store.get(collection, "d") == Document("d", 3, {"w": 3})


async def test_creating_an_existing_document_conflicts_and_changes_nothing(
    read_store: ReadModelStore, collection: str
) -> None:
    await read_store.put(collection, "d", {"v": 1}, expected_rev=0)
    with pytest.raises(RevisionConflict) as caught:
        await read_store.put(collection, "d", {"v": 2}, expected_rev=0)
    assert (caught.value.collection, caught.value.doc_id, caught.value.expected_rev) == (
        collection,
        "d",
        0,
    )
    assert await read_store.get(collection, "d") == Document("d", 1, {"v": 1})


async def test_updating_at_a_wrong_revision_conflicts_and_changes_nothing(
    read_store: ReadModelStore, collection: str
) -> None:
    await read_store.put(collection, "d", {"v": 1}, expected_rev=0)
    await read_store.put(collection, "d", {"v": 2}, expected_rev=1)
    for stale in (1, 3):
        with pytest.raises(RevisionConflict) as caught:
            await read_store.put(collection, "d", {"v": 99}, expected_rev=stale)
        assert caught.value.expected_rev == stale
    assert await read_store.get(collection, "d") == Document("d", 2, {"v": 2})


async def test_updating_a_missing_document_conflicts_and_creates_nothing(
    read_store: ReadModelStore, collection: str
) -> None:
    with pytest.raises(RevisionConflict):
        await read_store.put(collection, "ghost", {"v": 1}, expected_rev=1)
    assert await read_store.get(collection, "ghost") is None


async def test_a_negative_expected_revision_is_refused(
    read_store: ReadModelStore, collection: str
) -> None:
    with pytest.raises(ValueError, match="expected_rev"):
        await read_store.put(collection, "d", {"v": 1}, expected_rev=-1)


@pytest.mark.parametrize("field", ["_id", "_rev"])
async def test_body_fields_the_adapters_use_themselves_are_refused(
    read_store: ReadModelStore, collection: str, field: str
) -> None:
    with pytest.raises(ValueError, match="reserved"):
        await read_store.put(collection, "d", {field: "x"}, expected_rev=0)
    with pytest.raises(ValueError, match="reserved"):
        await read_store.put_many(collection, {"d": {field: "x"}})
    assert await read_store.get(collection, "d") is None


async def test_an_update_can_also_require_field_values(
    read_store: ReadModelStore, collection: str
) -> None:
    # A lease is fenced on its owner as well as the revision: a revision can come round
    # again (the document recreated, a write rolled back), an owner's name does not.
    await read_store.put(collection, "d", {"owner": "a", "n": 1}, expected_rev=0)
    for other in ({"owner": "b"}, {"owner": "a", "n": 2}, {"missing": "x"}):
        with pytest.raises(RevisionConflict):
            await read_store.put(collection, "d", {"owner": "b"}, expected_rev=1, where=other)
    assert await read_store.get(collection, "d") == Document("d", 1, {"owner": "a", "n": 1})
    rev = await read_store.put(
        collection, "d", {"owner": "a", "n": 2}, expected_rev=1, where={"owner": "a", "n": 1}
    )
    assert rev == 2
    with pytest.raises(RevisionConflict):  # the revision still counts
        await read_store.put(collection, "d", {"owner": "a"}, expected_rev=1, where={"owner": "a"})
    with pytest.raises(ValueError, match="where"):  # nothing stored to compare on create
        await read_store.put(collection, "e", {"owner": "a"}, expected_rev=0, where={"owner": "a"})
    assert await read_store.get(collection, "e") is None


async def test_the_store_tells_its_own_time(read_store: ReadModelStore) -> None:
    # Leases expire by the store's clock, which every process sees the same. The servers
    # under test run on this machine, so here it is this machine's time.
    before = time.time()
    told = await read_store.server_time()
    assert before - 1 <= told <= time.time() + 1


async def test_concurrent_creates_exactly_one_wins(
    read_store: ReadModelStore, collection: str
) -> None:
    results = await asyncio.gather(
        *(read_store.put(collection, "d", {"writer": n}, expected_rev=0) for n in range(10)),
        return_exceptions=True,
    )
    winners = [n for n, result in enumerate(results) if result == 1]
    assert len(winners) == 1
    assert all(isinstance(r, RevisionConflict) for n, r in enumerate(results) if n != winners[0])
    assert await read_store.get(collection, "d") == Document("d", 1, {"writer": winners[0]})


async def test_concurrent_updates_at_the_same_revision_exactly_one_wins(
    read_store: ReadModelStore, collection: str
) -> None:
    await read_store.put(collection, "d", {"writer": None}, expected_rev=0)
    results = await asyncio.gather(
        *(read_store.put(collection, "d", {"writer": n}, expected_rev=1) for n in range(10)),
        return_exceptions=True,
    )
    winners = [n for n, result in enumerate(results) if result == 2]
    assert len(winners) == 1
    assert sum(isinstance(r, RevisionConflict) for r in results) == 9
    assert await read_store.get(collection, "d") == Document("d", 2, {"writer": winners[0]})


async def test_get_many_returns_the_existing_documents_by_id(
    read_store: ReadModelStore, collection: str
) -> None:
    for n in range(5):
        await read_store.put(collection, f"d{n}", {"n": n}, expected_rev=0)
    found = await read_store.get_many(collection, ["d3", "missing", "d0", "d3"])
    assert found == {"d3": Document("d3", 1, {"n": 3}), "d0": Document("d0", 1, {"n": 0})}
    assert await read_store.get_many(collection, []) == {}


async def test_get_many_of_more_ids_than_one_request_carries(
    read_store: ReadModelStore, collection: str
) -> None:
    await read_store.put_many(collection, {f"d{n}": {"n": n} for n in range(2500)})
    wanted = [f"d{n}" for n in range(0, 2500, 2)] + [f"x{n}" for n in range(300)]
    found = await read_store.get_many(collection, wanted)
    assert sorted(found) == sorted(f"d{n}" for n in range(0, 2500, 2))
    assert found["d2498"].body == {"n": 2498}


# -- queries -----------------------------------------------------------------------------


@pytest.fixture
async def mixed(read_store: ReadModelStore, collection: str) -> str:
    """Documents whose fields hold values of different types that look alike."""
    bodies: dict[str, dict[str, Any]] = {
        "a": {"status": "pending", "created_at": "2026-01-03", "n": 1, "flag": True, "opt": None},
        "b": {"status": "pending", "created_at": "2026-01-01", "n": "1", "flag": 1, "opt": 0},
        "c": {"status": "shipped", "created_at": "2026-01-02", "n": 1.0, "flag": False},
        "d": {"status": "pending", "created_at": "2026-01-02", "n": 2, "flag": 0, "opt": "x"},
        "e": {"status": "1", "created_at": "2026-01-05", "n": True, "flag": "true", "opt": ""},
    }
    for doc_id, body in bodies.items():
        await read_store.put(collection, doc_id, body, expected_rev=0)
    return collection


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"status": "pending"}, ["a", "b", "d"]),
        ({"status": "1"}, ["e"]),  # a string, not the number 1
        ({"n": 1}, ["a", "c"]),  # 1 and 1.0 are the same number; "1" and true are not
        ({"n": "1"}, ["b"]),
        ({"n": True}, ["e"]),
        ({"flag": True}, ["a"]),  # true is not 1
        ({"flag": False}, ["c"]),  # false is not 0
        ({"flag": 1}, ["b"]),
        ({"flag": 0}, ["d"]),
        ({"flag": "true"}, ["e"]),
        ({"opt": None}, ["a", "c"]),  # null and missing alike
        ({"opt": 0}, ["b"]),
        ({"opt": ""}, ["e"]),
        ({"status": "pending", "n": 2}, ["d"]),
        ({"status": "nothing"}, []),
        ({}, ["a", "b", "c", "d", "e"]),
    ],
)
async def test_find_by_equality_respects_json_types(
    read_store: ReadModelStore, mixed: str, where: dict[str, Any], expected: list[str]
) -> None:
    assert ids(await read_store.find(mixed, where=where)) == expected
    assert await read_store.count(mixed, where=where) == len(expected)


async def test_find_without_order_is_by_id(read_store: ReadModelStore, mixed: str) -> None:
    assert ids(await read_store.find(mixed)) == ["a", "b", "c", "d", "e"]
    assert ids(await read_store.find(mixed, descending=True)) == ["e", "d", "c", "b", "a"]


async def test_find_ordered_by_a_field_then_by_id(read_store: ReadModelStore, mixed: str) -> None:
    ascending = await read_store.find(mixed, order_by="created_at")
    assert ids(ascending) == ["b", "c", "d", "a", "e"]  # c and d tie: by id
    descending = await read_store.find(mixed, order_by="created_at", descending=True)
    assert ids(descending) == ["e", "a", "d", "c", "b"]


async def test_find_with_where_order_and_limit(read_store: ReadModelStore, mixed: str) -> None:
    found = await read_store.find(
        mixed, where={"status": "pending"}, order_by="created_at", limit=2
    )
    assert ids(found) == ["b", "d"]
    assert found[0] == Document(
        "b", 1, {"status": "pending", "created_at": "2026-01-01", "n": "1", "flag": 1, "opt": 0}
    )


async def test_find_before_is_strictly_less(read_store: ReadModelStore, mixed: str) -> None:
    found = await read_store.find(
        mixed,
        where={"status": "pending"},
        before=("created_at", "2026-01-03"),
        order_by="created_at",
    )
    assert ids(found) == ["b", "d"]
    newest_first = await read_store.find(
        mixed, before=("created_at", "2026-01-05"), order_by="created_at", descending=True
    )
    assert ids(newest_first) == ["a", "d", "c", "b"]


async def test_find_before_compares_within_the_value_type(
    read_store: ReadModelStore, mixed: str
) -> None:
    # n holds 1, "1", 1.0, 2 and true: only the numbers are below 2, only strings below "2"
    assert ids(await read_store.find(mixed, before=("n", 2))) == ["a", "c"]
    assert ids(await read_store.find(mixed, before=("n", 1.5))) == ["a", "c"]
    assert ids(await read_store.find(mixed, before=("n", "2"))) == ["b"]


async def test_before_none_is_refused(read_store: ReadModelStore, mixed: str) -> None:
    with pytest.raises(ValueError, match="None"):
        await read_store.find(mixed, before=("created_at", None))


async def test_find_limit(read_store: ReadModelStore, collection: str) -> None:
    await read_store.put_many(collection, {f"d{n:03}": {"n": n} for n in range(150)})
    assert len(await read_store.find(collection)) == 100  # the default
    assert ids(await read_store.find(collection, order_by="n", limit=3)) == [
        "d000",
        "d001",
        "d002",
    ]
    assert len(await read_store.find(collection, limit=1000)) == 150
    assert await read_store.find(collection, limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        await read_store.find(collection, limit=-1)


async def test_count(read_store: ReadModelStore, mixed: str) -> None:
    assert await read_store.count(mixed) == 5
    assert await read_store.count(mixed, where={"status": "pending", "flag": 0}) == 1


async def test_queries_work_on_fields_nobody_indexed(
    read_store: ReadModelStore, new_collection: NewCollection
) -> None:
    name = new_collection()
    await read_store.ensure_collection(name)
    await read_store.put(name, "x", {"colour": "red", "size": 2}, expected_rev=0)
    await read_store.put(name, "y", {"colour": "red", "size": 1}, expected_rev=0)
    found = await read_store.find(name, where={"colour": "red"}, order_by="size")
    assert ids(found) == ["y", "x"]


# -- bulk upserts ------------------------------------------------------------------------


async def test_put_many_inserts_thousands_of_documents(
    read_store: ReadModelStore, collection: str
) -> None:
    documents = {
        f"order-{n:05}": {"status": "pending" if n % 2 else "shipped", "n": n, "s": "$n"}
        for n in range(5000)
    }
    await read_store.put_many(collection, documents)
    assert await read_store.count(collection) == 5000
    assert await read_store.count(collection, where={"status": "pending"}) == 2500
    assert await read_store.get(collection, "order-04321") == Document(
        "order-04321", 1, {"status": "pending", "n": 4321, "s": "$n"}
    )
    sample = await read_store.get_many(collection, [f"order-{n:05}" for n in range(0, 5000, 7)])
    assert len(sample) == len(range(0, 5000, 7))
    assert all(doc.body == documents[doc_id] and doc.rev == 1 for doc_id, doc in sample.items())


async def test_put_many_over_existing_documents_replaces_them_and_bumps_revisions(
    read_store: ReadModelStore, collection: str
) -> None:
    await read_store.put(collection, "a", {"v": 1, "dropped": True}, expected_rev=0)
    await read_store.put(collection, "a", {"v": 2, "dropped": True}, expected_rev=1)
    await read_store.put_many(collection, {"a": {"v": 3, "s": "$v"}, "b": {"v": 1}})
    assert await read_store.get(collection, "a") == Document("a", 3, {"v": 3, "s": "$v"})
    assert await read_store.get(collection, "b") == Document("b", 1, {"v": 1})
    # the revision moved on, so a writer still holding revision 2 is refused
    with pytest.raises(RevisionConflict):
        await read_store.put(collection, "a", {"v": 99}, expected_rev=2)
    assert await read_store.put(collection, "a", {"v": 4}, expected_rev=3) == 4


async def test_concurrent_put_many_of_the_same_new_documents_all_succeed(
    read_store: ReadModelStore, collection: str
) -> None:
    # Two upserts of one missing document can both try to insert it: the loser must not
    # fail with a duplicate-key error (MongoDB retries such an upsert itself).
    for round_ in range(5):
        documents = {f"r{round_}-{n}": {"n": n} for n in range(50)}
        await asyncio.gather(*(read_store.put_many(collection, documents) for _ in range(8)))
        stored = await read_store.get_many(collection, list(documents))
        assert {d: doc.body for d, doc in stored.items()} == documents
        assert {doc.rev for doc in stored.values()} == {8}


async def test_put_many_of_nothing_is_a_no_op(read_store: ReadModelStore, collection: str) -> None:
    await read_store.put_many(collection, {})
    assert await read_store.count(collection) == 0


# -- collections -------------------------------------------------------------------------


async def test_ensure_collection_is_idempotent(
    read_store: ReadModelStore, new_collection: NewCollection
) -> None:
    name = new_collection()
    await read_store.ensure_collection(name, [("status",)])
    await read_store.put(name, "d", {"status": "x"}, expected_rev=0)
    await read_store.ensure_collection(name, [("status",)])
    await read_store.ensure_collection(name, [("status",), ("other", "status")])
    assert await read_store.get(name, "d") == Document("d", 1, {"status": "x"})
    assert ids(await read_store.find(name, where={"status": "x"})) == ["d"]


async def test_list_collections_shows_ensured_and_written_ones(
    read_store: ReadModelStore, new_collection: NewCollection
) -> None:
    ensured, written, never = new_collection(), new_collection(), new_collection()
    await read_store.ensure_collection(ensured)
    await read_store.put(written, "d", {}, expected_rev=0)
    await read_store.get(never, "d")
    listed = await read_store.list_collections()
    assert ensured in listed
    assert written in listed
    assert never not in listed
    assert listed == sorted(listed)


async def test_drop_collection_removes_it_and_its_documents(
    read_store: ReadModelStore, collection: str
) -> None:
    await read_store.put_many(collection, {"a": {"status": "x"}, "b": {"status": "y"}})
    await read_store.drop_collection(collection)
    assert collection not in await read_store.list_collections()
    assert await read_store.get(collection, "a") is None
    assert await read_store.count(collection) == 0
    await read_store.drop_collection(collection)  # dropping again is not an error
    # a dropped collection can be made again, empty
    await read_store.ensure_collection(collection, [("status",)])
    assert await read_store.find(collection) == []
    assert await read_store.put(collection, "a", {"status": "z"}, expected_rev=0) == 1


async def test_a_collection_never_ensured_reads_as_empty(
    read_store: ReadModelStore, new_collection: NewCollection
) -> None:
    name = new_collection()
    assert await read_store.get(name, "d") is None
    assert await read_store.get_many(name, ["d"]) == {}
    assert await read_store.find(name, where={"a": 1}, order_by="b") == []
    assert await read_store.count(name, where={"a": 1}) == 0
    with pytest.raises(RevisionConflict):
        await read_store.put(name, "d", {"a": 1}, expected_rev=3)


async def test_writes_to_a_collection_never_ensured_are_kept(
    read_store: ReadModelStore, new_collection: NewCollection
) -> None:
    one, many = new_collection(), new_collection()
    assert await read_store.put(one, "d", {"a": 1}, expected_rev=0) == 1
    await read_store.put_many(many, {"x": {"a": 2}, "y": {"a": 3}})
    assert await read_store.get(one, "d") == Document("d", 1, {"a": 1})
    assert ids(await read_store.find(many, where={"a": 3})) == ["y"]


# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Orders",
        "1orders",
        "_orders",
        "orders-v1",
        "orders.v1",
        'x"; DROP TABLE y; --',
        "a" * 64,
    ],
)
async def test_invalid_collection_names_are_refused(read_store: ReadModelStore, name: str) -> None:
    with pytest.raises(ValueError, match="collection name"):
        await read_store.ensure_collection(name)
    with pytest.raises(ValueError, match="collection name"):
        await read_store.put(name, "d", {}, expected_rev=0)
    with pytest.raises(ValueError, match="collection name"):
        await read_store.put_many(name, {"d": {}})
    with pytest.raises(ValueError, match="collection name"):
        await read_store.get(name, "d")
    with pytest.raises(ValueError, match="collection name"):
        await read_store.find(name)
    with pytest.raises(ValueError, match="collection name"):
        await read_store.count(name)
    with pytest.raises(ValueError, match="collection name"):
        await read_store.drop_collection(name)


@pytest.mark.parametrize("field", ["", "a.b", "$where", "a b", "1a", "x') OR 1=1 --", "ü"])
async def test_invalid_field_names_are_refused(
    read_store: ReadModelStore, collection: str, field: str
) -> None:
    with pytest.raises(ValueError, match="field name"):
        await read_store.find(collection, where={field: 1})
    with pytest.raises(ValueError, match="field name"):
        await read_store.find(collection, before=(field, 1))
    with pytest.raises(ValueError, match="field name"):
        await read_store.find(collection, order_by=field)
    with pytest.raises(ValueError, match="field name"):
        await read_store.count(collection, where={field: 1})
    with pytest.raises(ValueError, match="field name"):
        await read_store.ensure_collection(collection, [("status", field)])


async def test_an_index_needs_a_field(read_store: ReadModelStore, collection: str) -> None:
    with pytest.raises(ValueError, match="at least one field"):
        await read_store.ensure_collection(collection, [()])


async def test_query_values_must_be_scalars(read_store: ReadModelStore, collection: str) -> None:
    with pytest.raises(TypeError, match="query values"):
        await read_store.find(collection, where={"status": {"$ne": None}})
    with pytest.raises(TypeError, match="query values"):
        await read_store.find(collection, before=("status", ["x"]))


async def test_ping(read_store: ReadModelStore) -> None:
    await read_store.ping()
