"""The projections as pure functions: documents, version guards, and convergence under
at-least-once, out-of-order delivery."""

from __future__ import annotations

import copy
import json
import random
from collections import deque
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest

from conveyor.readmodels.projections import (
    ACTIVE_ORDERS,
    CUSTOMER_HISTORY,
    ORDER_PROJECTIONS,
    ORDER_SUMMARY,
    PROJECTIONS,
    PROJECTIONS_BY_NAME,
    STOCK_LEVELS,
    Body,
    ContractViolation,
    Duplicate,
    Gap,
    Projection,
    UnexpectedGap,
    Updated,
    apply_in_memory,
    fold,
)
from messaging.contracts.orders import (
    ItemAddedData,
    ItemAddedEvent,
    ItemRemovedData,
    ItemRemovedEvent,
    OrderCancelledData,
    OrderCancelledEvent,
    OrderConfirmedData,
    OrderConfirmedEvent,
    OrderCreatedData,
    OrderCreatedEvent,
    OrderFulfilledData,
    OrderFulfilledEvent,
)
from messaging.contracts.orders import OrderEvent as IntegrationEvent

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Clock:
    """One tick per event across all orders, so times follow the log order."""

    def __init__(self) -> None:
        self.ticks = 0

    def next(self) -> datetime:
        self.ticks += 1
        return T0 + timedelta(seconds=self.ticks)


class OrderEvents:
    """Builds one order's integration events with contiguous versions."""

    def __init__(self, order_id: str, customer_id: str, clock: Clock | None = None) -> None:
        self.order_id = order_id
        self.customer_id = customer_id
        self.clock = clock or Clock()
        self.version = 0

    def _common(self) -> dict[str, Any]:
        self.version += 1
        return {
            "event_id": uuid4(),
            "schema_version": 1,
            "order_id": self.order_id,
            "customer_id": self.customer_id,
            "version": self.version,
            "occurred_at": self.clock.next(),
        }

    def created(self) -> OrderCreatedEvent:
        return OrderCreatedEvent(
            type="OrderCreated",
            data=OrderCreatedData(customer_id=self.customer_id),
            **self._common(),
        )

    def added(self, sku: str, quantity: int, unit_price: str) -> ItemAddedEvent:
        return ItemAddedEvent(
            type="ItemAdded",
            data=ItemAddedData(sku=sku, quantity=quantity, unit_price=unit_price),
            **self._common(),
        )

    def removed(self, sku: str) -> ItemRemovedEvent:
        return ItemRemovedEvent(type="ItemRemoved", data=ItemRemovedData(sku=sku), **self._common())

    def confirmed(self, total: str) -> OrderConfirmedEvent:
        return OrderConfirmedEvent(
            type="OrderConfirmed", data=OrderConfirmedData(total=total), **self._common()
        )

    def cancelled(self, reason: str) -> OrderCancelledEvent:
        return OrderCancelledEvent(
            type="OrderCancelled", data=OrderCancelledData(reason=reason), **self._common()
        )

    def fulfilled(self) -> OrderFulfilledEvent:
        return OrderFulfilledEvent(
            type="OrderFulfilled", data=OrderFulfilledData(), **self._common()
        )


def at(event: IntegrationEvent) -> str:
    return event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def updated(projection: Projection, body: Body | None, event: IntegrationEvent) -> Body:
    outcome = projection.apply(body, event)
    assert isinstance(outcome, Updated), outcome
    return outcome.body


def run(projection: Projection, events: list[IntegrationEvent]) -> list[Body]:
    """The successive bodies of the single document all `events` feed."""
    bodies: list[Body] = []
    body: Body | None = None
    for event in events:
        body = updated(projection, body, event)
        bodies.append(body)
    return bodies


def lifecycle() -> list[IntegrationEvent]:
    """Create, add, add another, add the first SKU again, remove, confirm: total 20.28.

    6 x 3.38 is 20.279999999999998 in binary floating point: only Decimal gets it exact.
    """
    order = OrderEvents("o-1", "c-1")
    return [
        order.created(),
        order.added("SKU-A", 2, "3.38"),
        order.added("SKU-B", 1, "9.99"),
        order.added("SKU-A", 4, "3.38"),
        order.removed("SKU-B"),
        order.confirmed("20.28"),
    ]


def walk(value: Any) -> list[Any]:
    """Every leaf value of a JSON-like structure."""
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in walk(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in walk(item)]
    return [value]


def scramble(value: Any) -> None:
    """Destroy a JSON-like structure in place, to show it shares nothing with another."""
    children = list(value.values()) if isinstance(value, dict) else value
    if isinstance(value, dict | list):
        for child in children:
            scramble(child)
        value.clear()


# -- registry --------------------------------------------------------------------------------


def test_the_three_projections_name_their_collections_indexes_and_document_ids() -> None:
    assert [p.name for p in PROJECTIONS] == [
        "order_summary",
        "customer_history",
        "active_orders",
        "stock_levels",
    ]
    assert {p.name: p for p in PROJECTIONS} == PROJECTIONS_BY_NAME
    assert ORDER_SUMMARY.indexes == (("customer_id",),)
    assert CUSTOMER_HISTORY.indexes == (
        ("customer_id", "created_at"),
        ("customer_id", "status"),
        ("customer_id", "updated_at"),
    )
    assert ACTIVE_ORDERS.indexes == (
        ("status", "customer_id", "created_at"),
        ("status", "created_at"),
    )
    event = OrderEvents("o-9", "c-9").created()
    assert ORDER_SUMMARY.document_id(event) == "o-9"
    assert CUSTOMER_HISTORY.document_id(event) == "o-9"  # one document per order
    assert ACTIVE_ORDERS.document_id(event) == "o-9"


# -- order_summary ---------------------------------------------------------------------------


def test_order_summary_follows_the_lifecycle_with_exact_amounts() -> None:
    events = lifecycle()
    created, added_a, added_b, added_a_again, removed_b, confirmed = run(ORDER_SUMMARY, events)

    assert created == {
        "order_id": "o-1",
        "customer_id": "c-1",
        "status": "pending",
        "items": [],
        "total": "0.00",
        "item_count": 0,
        "version": 1,
        "created_at": at(events[0]),
        "updated_at": at(events[0]),
        "cancel_reason": None,
        "last_event_id": str(events[0].event_id),
    }
    assert added_a["items"] == [
        {"sku": "SKU-A", "quantity": 2, "unit_price": "3.38", "subtotal": "6.76"}
    ]
    assert (added_a["total"], added_a["item_count"]) == ("6.76", 2)
    assert [item["sku"] for item in added_b["items"]] == ["SKU-A", "SKU-B"]
    assert (added_b["total"], added_b["item_count"]) == ("16.75", 3)
    # The same SKU again adds to its line, which keeps its place.
    assert added_a_again["items"] == [
        {"sku": "SKU-A", "quantity": 6, "unit_price": "3.38", "subtotal": "20.28"},
        {"sku": "SKU-B", "quantity": 1, "unit_price": "9.99", "subtotal": "9.99"},
    ]
    assert (added_a_again["total"], added_a_again["item_count"]) == ("30.27", 7)
    assert removed_b["items"] == [
        {"sku": "SKU-A", "quantity": 6, "unit_price": "3.38", "subtotal": "20.28"}
    ]
    assert (removed_b["total"], removed_b["item_count"]) == ("20.28", 6)
    assert confirmed == {
        **removed_b,
        "status": "confirmed",
        "total": "20.28",
        "version": 6,
        "updated_at": at(events[5]),
        "last_event_id": str(events[5].event_id),
    }
    assert confirmed["created_at"] == at(events[0])


def test_order_summary_takes_the_confirmed_total_from_the_event() -> None:
    order = OrderEvents("o-1", "c-1")
    body = fold(ORDER_SUMMARY, [order.created(), order.added("S", 1, "1.10")])["o-1"]
    # The domain's total is the authority once confirmed, even in a different notation.
    assert updated(ORDER_SUMMARY, body, order.confirmed("1.1"))["total"] == "1.10"


def test_order_summary_records_a_cancellation_and_its_reason() -> None:
    order = OrderEvents("o-1", "c-1")
    events: list[IntegrationEvent] = [
        order.created(),
        order.added("S", 2, "0.05"),
        order.cancelled("changed my mind"),
    ]
    body = fold(ORDER_SUMMARY, events)["o-1"]
    assert body["status"] == "cancelled"
    assert body["cancel_reason"] == "changed my mind"
    assert (body["total"], body["item_count"], body["version"]) == ("0.10", 2, 3)
    assert body["items"] == [{"sku": "S", "quantity": 2, "unit_price": "0.05", "subtotal": "0.10"}]


def test_a_confirmed_order_can_still_be_cancelled() -> None:
    events = lifecycle()
    order = OrderEvents("o-1", "c-1")
    order.version = len(events)
    events.append(order.cancelled("fraud"))
    summary = fold(ORDER_SUMMARY, events)["o-1"]
    assert (summary["status"], summary["total"], summary["cancel_reason"]) == (
        "cancelled",
        "20.28",
        "fraud",
    )
    active = fold(ACTIVE_ORDERS, events)["o-1"]
    assert (active["status"], active["total"], active["item_count"]) == ("cancelled", "20.28", 6)


def test_a_confirmed_order_can_be_fulfilled_and_shows_it() -> None:
    events = lifecycle()
    order = OrderEvents("o-1", "c-1")
    order.version = len(events)
    events.append(order.fulfilled())
    for projection in ORDER_PROJECTIONS:
        body = fold(projection, events)["o-1"]
        assert (body["status"], body["total"], body["version"]) == ("fulfilled", "20.28", 7)
    assert fold(ORDER_SUMMARY, events)["o-1"]["cancel_reason"] is None


def test_only_a_confirmed_order_can_be_fulfilled() -> None:
    order = OrderEvents("o-1", "c-1")
    created = order.created()
    with pytest.raises(ContractViolation, match="needs a confirmed order"):
        fold(ORDER_SUMMARY, [created, order.fulfilled()])


# -- active_orders ---------------------------------------------------------------------------


def test_active_orders_follows_the_lifecycle_and_keeps_a_tombstone() -> None:
    events = lifecycle()
    bodies = run(ACTIVE_ORDERS, events)
    assert bodies[0] == {
        "order_id": "o-1",
        "customer_id": "c-1",
        "status": "pending",
        "total": "0.00",
        "item_count": 0,
        "version": 1,
        "created_at": at(events[0]),
        "updated_at": at(events[0]),
        "lines": [],
    }
    assert [(b["total"], b["item_count"]) for b in bodies] == [
        ("0.00", 0),
        ("6.76", 2),
        ("16.75", 3),
        ("30.27", 7),
        ("20.28", 6),
        ("20.28", 6),
    ]
    assert bodies[4]["lines"] == [{"sku": "SKU-A", "quantity": 6, "unit_price": "3.38"}]
    tombstone = bodies[-1]
    assert tombstone == {
        **bodies[4],
        "status": "confirmed",
        "version": 6,
        "updated_at": at(events[5]),
        "lines": [],
    }
    # A late duplicate of the creation cannot bring the order back as pending.
    assert isinstance(ACTIVE_ORDERS.apply(tombstone, events[0]), Duplicate)


def test_a_cancelled_order_leaves_a_cancelled_tombstone_in_active_orders() -> None:
    order = OrderEvents("o-1", "c-1")
    events: list[IntegrationEvent] = [
        order.created(),
        order.added("S", 3, "2.00"),
        order.cancelled("out of stock"),
    ]
    body = fold(ACTIVE_ORDERS, events)["o-1"]
    assert (body["status"], body["total"], body["item_count"], body["lines"]) == (
        "cancelled",
        "6.00",
        3,
        [],
    )
    for event in events:
        assert isinstance(ACTIVE_ORDERS.apply(body, event), Duplicate)


# -- customer_history ------------------------------------------------------------------------


def test_customer_history_follows_one_order() -> None:
    events = lifecycle()
    bodies = run(CUSTOMER_HISTORY, events)
    assert bodies[0] == {
        "customer_id": "c-1",
        "order_id": "o-1",
        "status": "pending",
        "total": "0.00",
        "version": 1,
        "created_at": at(events[0]),
        "updated_at": at(events[0]),
        "lines": [],
    }
    assert [b["total"] for b in bodies] == ["0.00", "6.76", "16.75", "30.27", "20.28", "20.28"]
    assert bodies[4]["lines"] == [{"sku": "SKU-A", "quantity": 6, "unit_price": "3.38"}]
    final = bodies[-1]
    assert final["status"] == "confirmed"
    assert final["lines"] == []  # the total is final: the lines are not kept
    assert final["version"] == 6
    assert final["updated_at"] == at(events[-1])


def test_customer_history_keeps_each_order_of_a_customer_in_its_own_guarded_document() -> None:
    clock = Clock()
    a = OrderEvents("o-a", "c-1", clock)
    b = OrderEvents("o-b", "c-1", clock)
    a1, b1 = a.created(), b.created()
    a2, b2 = a.added("X", 2, "10.00"), b.added("Y", 1, "0.99")
    b3, a3 = b.added("Z", 3, "1.01"), a.confirmed("20.00")
    b4 = b.removed("Y")

    documents = fold(CUSTOMER_HISTORY, [a1, b1, a2, b2, b3, a3])
    assert {
        k: (d["customer_id"], d["status"], d["total"], d["version"]) for k, d in documents.items()
    } == {"o-a": ("c-1", "confirmed", "20.00", 3), "o-b": ("c-1", "pending", "4.02", 3)}

    # Each order is guarded by its own version.
    assert isinstance(CUSTOMER_HISTORY.apply(documents["o-a"], a2), Duplicate)
    assert isinstance(CUSTOMER_HISTORY.apply(documents["o-b"], b3), Duplicate)
    b5 = b.cancelled("too slow")
    gap = CUSTOMER_HISTORY.apply(documents["o-b"], b5)
    assert isinstance(gap, Gap)
    assert (gap.expected_version, gap.got_version) == (4, 5)
    assert "o-b" in gap.reason

    body = updated(CUSTOMER_HISTORY, documents["o-b"], b4)
    assert body["total"] == "3.03"
    assert body["lines"] == [{"sku": "Z", "quantity": 3, "unit_price": "1.01"}]
    body = updated(CUSTOMER_HISTORY, body, b5)
    assert (body["status"], body["lines"]) == ("cancelled", [])


def test_no_customer_history_document_grows_with_the_customers_history() -> None:
    """One document per customer, rewritten whole on every event, reached MongoDB's 16 MB
    limit: then every event of that customer dead-lettered and a rebuild never finished."""
    clock = Clock()
    events: list[IntegrationEvent] = []
    for n in range(300):
        order = OrderEvents(f"o-{n}", "c-1", clock)
        events += [order.created(), order.added("S", 1, "1.00"), order.confirmed("1.00")]
    documents = fold(CUSTOMER_HISTORY, events)
    assert len(documents) == 300
    largest = max(len(json.dumps(body)) for body in documents.values())
    assert largest < 400  # the size of one order's entry, whatever the customer's history


# -- guards ----------------------------------------------------------------------------------


@pytest.mark.parametrize("projection", ORDER_PROJECTIONS, ids=lambda p: p.name)
def test_reapplying_any_earlier_event_is_a_duplicate_that_changes_nothing(
    projection: Projection,
) -> None:
    events = lifecycle()
    documents = fold(projection, events)
    before = copy.deepcopy(documents)
    for event in events:
        outcome = apply_in_memory(projection, documents, event)
        assert isinstance(outcome, Duplicate)
        assert f"v{event.version}" in outcome.reason
    assert documents == before

    # Mid-lifecycle too: every event up to the document's version is a duplicate.
    partial = fold(projection, events[:3])
    doc_id = projection.document_id(events[0])
    for event in events[:3]:
        assert isinstance(projection.apply(partial[doc_id], event), Duplicate)


@pytest.mark.parametrize("projection", ORDER_PROJECTIONS, ids=lambda p: p.name)
def test_a_skipped_version_is_a_gap(projection: Projection) -> None:
    events = lifecycle()
    body = fold(projection, events[:2])[projection.document_id(events[0])]
    for skipped_to in events[3:]:
        outcome = projection.apply(body, skipped_to)
        assert isinstance(outcome, Gap)
        assert outcome == Gap(
            expected_version=3, got_version=skipped_to.version, reason=outcome.reason
        )
        assert "version 2" in outcome.reason


@pytest.mark.parametrize("projection", ORDER_PROJECTIONS, ids=lambda p: p.name)
def test_a_missing_document_accepts_only_version_one(projection: Projection) -> None:
    events = lifecycle()
    for event in events[1:]:
        outcome = projection.apply(None, event)
        assert isinstance(outcome, Gap)
        assert (outcome.expected_version, outcome.got_version) == (1, event.version)
        assert "does not exist" in outcome.reason
    assert isinstance(projection.apply(None, events[0]), Updated)


@pytest.mark.parametrize("projection", ORDER_PROJECTIONS, ids=lambda p: p.name)
def test_events_the_lifecycle_cannot_produce_are_refused(projection: Projection) -> None:
    order = OrderEvents("o-1", "c-1")
    with pytest.raises(ContractViolation, match="must be OrderCreated"):
        projection.apply(None, order.added("S", 1, "1.00"))  # version 1, but not a creation

    order = OrderEvents("o-1", "c-1")
    events: list[IntegrationEvent] = [
        order.created(),
        order.added("S", 1, "1.00"),
        order.confirmed("1.00"),
    ]
    body = fold(projection, events)[projection.document_id(events[0])]
    with pytest.raises(ContractViolation, match="confirmed"):
        projection.apply(body, order.added("S", 1, "1.00"))


# -- documents -------------------------------------------------------------------------------


@pytest.mark.parametrize("projection", ORDER_PROJECTIONS, ids=lambda p: p.name)
def test_the_input_body_is_never_mutated_nor_shared(projection: Projection) -> None:
    clock = Clock()
    a = OrderEvents("o-a", "c-1", clock)
    b = OrderEvents("o-b", "c-1", clock)
    a1, b1 = a.created(), b.created()
    events: list[IntegrationEvent] = [
        a1,
        b1,
        a.added("S", 1, "1.00"),
        b.added("T", 2, "2.00"),
        a.added("S", 2, "1.00"),
        b.removed("T"),
        a.confirmed("3.00"),
        b.cancelled("no"),
    ]
    documents: dict[str, Body] = {}
    for event in events:
        doc_id = projection.document_id(event)
        body = documents.get(doc_id)
        snapshot = copy.deepcopy(body)
        result = updated(projection, body, event)
        assert body == snapshot
        documents[doc_id] = copy.deepcopy(result)
        # Destroying the result leaves the input intact: they share no lists or dicts.
        scramble(result)
        assert body == snapshot
    for event in events:  # nor do duplicates
        body = documents[projection.document_id(event)]
        snapshot = copy.deepcopy(body)
        assert isinstance(projection.apply(body, event), Duplicate)
        assert body == snapshot


@pytest.mark.parametrize("projection", ORDER_PROJECTIONS, ids=lambda p: p.name)
def test_documents_are_json_without_floats(projection: Projection) -> None:
    events = lifecycle()
    for body in run(projection, events):
        assert json.loads(json.dumps(body)) == body
        assert not any(isinstance(leaf, float) for leaf in walk(body))


def test_times_are_utc_whatever_the_events_offset() -> None:
    event = OrderCreatedEvent(
        event_id=uuid4(),
        type="OrderCreated",
        schema_version=1,
        order_id="o-1",
        customer_id="c-1",
        version=1,
        occurred_at=datetime.fromisoformat("2026-03-01T11:30:00+02:00"),
        data=OrderCreatedData(customer_id="c-1"),
    )
    body = updated(ORDER_SUMMARY, None, event)
    assert body["created_at"] == body["updated_at"] == "2026-03-01T09:30:00.000000Z"


# -- in-memory folds -------------------------------------------------------------------------


def test_apply_in_memory_skips_duplicates_and_raises_on_a_gap() -> None:
    events = lifecycle()
    documents: dict[str, Body] = {}
    assert isinstance(apply_in_memory(ORDER_SUMMARY, documents, events[0]), Updated)
    kept = documents["o-1"]
    assert isinstance(apply_in_memory(ORDER_SUMMARY, documents, events[0]), Duplicate)
    assert documents["o-1"] is kept
    with pytest.raises(UnexpectedGap) as raised:
        apply_in_memory(ORDER_SUMMARY, documents, events[2])
    assert (raised.value.projection, raised.value.doc_id) == ("order_summary", "o-1")
    assert (raised.value.gap.expected_version, raised.value.gap.got_version) == (2, 3)
    assert documents == {"o-1": kept}


def test_fold_continues_from_given_documents() -> None:
    events = lifecycle()
    documents = fold(ORDER_SUMMARY, events[:3])
    same = fold(ORDER_SUMMARY, events[3:], documents)
    assert same is documents
    assert documents == fold(ORDER_SUMMARY, events)


# -- convergence under at-least-once, out-of-order delivery ----------------------------------


def random_log(rng: random.Random, *, orders: int, customers: int) -> list[IntegrationEvent]:
    """A valid global log: several orders' lifecycles, randomly interleaved."""
    clock = Clock()
    builders = [
        OrderEvents(f"o-{n}", f"c-{rng.randrange(customers)}", clock) for n in range(orders)
    ]
    status = {b.order_id: "new" for b in builders}
    lines: dict[str, dict[str, tuple[int, str]]] = {b.order_id: {} for b in builders}
    prices: dict[str, str] = {}
    budget = {b.order_id: rng.randint(1, 12) for b in builders}
    log: list[IntegrationEvent] = []
    while live := [b for b in builders if budget[b.order_id] > 0]:
        order = rng.choice(live)
        oid = order.order_id
        budget[oid] -= 1
        held = lines[oid]
        if status[oid] == "new":
            log.append(order.created())
            status[oid] = "pending"
        elif status[oid] == "pending":
            roll = rng.random()
            if roll < 0.55 or not held:
                sku = f"SKU-{rng.randrange(6)}"
                price = prices.setdefault(sku, str(Decimal(rng.randint(1, 99_999)) / 100))
                quantity = rng.randint(1, 5)
                held[sku] = (held.get(sku, (0, price))[0] + quantity, price)
                log.append(order.added(sku, quantity, price))
            elif roll < 0.75:
                sku = rng.choice(sorted(held))
                del held[sku]
                log.append(order.removed(sku))
            elif roll < 0.9:
                total = sum((Decimal(p) * q for q, p in held.values()), Decimal("0.00"))
                log.append(order.confirmed(str(total)))
                status[oid] = "confirmed"
            else:
                log.append(order.cancelled("changed my mind"))
                status[oid] = "cancelled"
        elif status[oid] == "confirmed" and rng.random() < 0.5:
            log.append(order.cancelled("returned"))
            status[oid] = "cancelled"
        elif status[oid] == "confirmed" and rng.random() < 0.5:
            log.append(order.fulfilled())
            status[oid] = "fulfilled"
        else:
            budget[oid] = 0  # final: nothing more can happen to it
    return log


def deliver(projection: Projection, deliveries: list[IntegrationEvent]) -> dict[str, Body]:
    """Consume deliveries like a worker: a Gap goes back to the end of the queue (the retry
    ladder), a Duplicate is acknowledged and dropped."""
    queue = deque(deliveries)
    documents: dict[str, Body] = {}
    gaps_in_a_row = 0
    while queue:
        assert gaps_in_a_row <= len(queue), "no delivery can make progress"
        event = queue.popleft()
        doc_id = projection.document_id(event)
        outcome = projection.apply(documents.get(doc_id), event)
        if isinstance(outcome, Gap):
            queue.append(event)
            gaps_in_a_row += 1
            continue
        gaps_in_a_row = 0
        if isinstance(outcome, Updated):
            documents[doc_id] = outcome.body
    return documents


def scrambled_deliveries(rng: random.Random, log: list[IntegrationEvent]) -> list[IntegrationEvent]:
    if rng.random() < 0.5:
        deliveries = rng.sample(log, len(log))
    else:  # mostly in order: each event drifts a few places, as with parallel consumers
        drifted = sorted((n + rng.uniform(0, 6), n) for n in range(len(log)))
        deliveries = [log[n] for _, n in drifted]
    for _ in range(rng.randint(1, len(log))):  # redeliveries, before or after the original
        deliveries.insert(rng.randrange(len(deliveries) + 1), rng.choice(log))
    return deliveries


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("projection", ORDER_PROJECTIONS, ids=lambda p: p.name)
def test_any_delivery_order_with_duplicates_converges_to_the_fold_of_the_log(
    projection: Projection, seed: int
) -> None:
    rng = random.Random(seed)
    log = random_log(rng, orders=rng.randint(2, 8), customers=rng.randint(1, 3))
    expected = fold(projection, log)
    for _ in range(4):
        assert deliver(projection, scrambled_deliveries(rng, log)) == expected


def test_the_random_logs_cover_every_event_type_and_shared_customers() -> None:
    # Guards the property test against a generator that quietly stops exercising cases.
    types: set[str] = set()
    shared = False
    for seed in range(25):
        rng = random.Random(seed)
        log = random_log(rng, orders=rng.randint(2, 8), customers=rng.randint(1, 3))
        types |= {e.type for e in log}
        per_customer: dict[str, set[str]] = {}
        for event in log:
            per_customer.setdefault(event.customer_id, set()).add(event.order_id)
        shared = shared or any(len(orders) > 1 for orders in per_customer.values())
    assert types == {
        "OrderCreated",
        "ItemAdded",
        "ItemRemoved",
        "OrderConfirmed",
        "OrderCancelled",
        "OrderFulfilled",
    }
    assert shared


# -- stock_levels ----------------------------------------------------------------------------


def stock_event(version: int, type_: str, **data: Any) -> Any:
    from messaging.contracts.inventory import EVENT_MODELS as INVENTORY_EVENTS

    return INVENTORY_EVENTS[type_].model_validate(
        {
            "event_id": UUID(int=version),
            "schema_version": 1,
            "aggregate": "inventory",
            "aggregate_id": "SKU-1",
            "version": version,
            "occurred_at": datetime(2026, 12, 1, 10, 0, version, tzinfo=UTC),
            "type": type_,
            "data": data,
        }
    )


STOCK_HISTORY = [
    stock_event(1, "StockReceived", quantity=10),
    stock_event(2, "StockReserved", order_id="o-1", quantity=4),
    stock_event(3, "StockReserved", order_id="o-2", quantity=5),
    stock_event(4, "ReservationRefused", order_id="o-3", sku="SKU-1", requested=2, available=1),
    stock_event(5, "ReservationCommitted", order_id="o-1", quantity=4),
    stock_event(6, "ReservationReleased", order_id="o-2", quantity=5),
]


def test_stock_levels_keep_on_hand_reserved_and_available_per_sku() -> None:
    states = [fold(STOCK_LEVELS, STOCK_HISTORY[:n])["SKU-1"] for n in range(1, 7)]
    assert [(s["on_hand"], s["reserved"], s["available"]) for s in states] == [
        (10, 0, 10),
        (10, 4, 6),
        (10, 9, 1),
        (10, 9, 1),
        (6, 5, 1),
        (6, 0, 6),
    ]
    final = states[-1]
    assert (final["received_total"], final["committed_total"], final["refused_total"]) == (10, 4, 1)
    assert (final["open_reservations"], final["version"], final["sku"]) == (0, 6, "SKU-1")
    assert final["updated_at"] == "2026-12-01T10:00:06.000000Z"
    assert STOCK_LEVELS.indexes == (("available",),)


def test_stock_levels_guard_duplicates_and_gaps_and_refuse_overselling() -> None:
    body = fold(STOCK_LEVELS, STOCK_HISTORY[:2])["SKU-1"]
    assert isinstance(STOCK_LEVELS.apply(body, STOCK_HISTORY[1]), Duplicate)
    assert isinstance(STOCK_LEVELS.apply(body, STOCK_HISTORY[3]), Gap)
    oversold = stock_event(3, "StockReserved", order_id="o-9", quantity=7)
    with pytest.raises(ContractViolation, match="negative stock"):
        STOCK_LEVELS.apply(body, oversold)


@pytest.mark.parametrize("seed", range(10))
def test_stock_levels_converge_whatever_the_delivery_order(seed: int) -> None:
    rng = random.Random(seed)
    expected = fold(STOCK_LEVELS, STOCK_HISTORY)
    assert deliver(STOCK_LEVELS, scrambled_deliveries(rng, STOCK_HISTORY)) == expected
