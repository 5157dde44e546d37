"""The checker: for every command the broker confirmed, its effect in the event store and
in the read models — Jepsen-style counts, made precise here.

sent        commands the load generator tried to publish
confirmed   of those, the ones the broker confirmed (publisher confirms): these conveyor
            must not lose. A publish that failed or timed out is indeterminate.
applied     a confirmed command whose events are in an order stream (metadata `command_id`,
            conveyor/application/commands.py) or that got a business-rejection outcome
            (`rejected` on conveyor.command-outcomes)
rejection records
            `CommandRejected` markers in the aggregate streams (and, from earlier
            versions, in `rejections-…` streams; conveyor/application/rejections.py): not
            effects, so they count neither as applied nor as duplicates; a command must
            have at most one, every rejected outcome must have one, and no command may
            have both one and order events (that is
            "reported rejected, then applied": a problem)
lost        confirmed, but neither (events nor rejection) once the system has settled
duplicated  a command_id whose events appear more than once in the order streams (every conveyor
            command produces exactly one event, domain/orders/order.py `decide`); a read model that
            counts an item twice shows up as a read-model mismatch instead (below)
unexpected  events (order events or rejection records) whose command_id was never sent
            and that no process manager recorded
derived     the process manager's own commands: every command a workflow stream
            (`fulfilment-<order>`) records, with its id derived from its cause
            (domain/fulfilment/outgoing.py). They are expected, not unexpected; each must be
            applied (events or a rejection record: derived lost) and never twice (derived
            duplicated), counted apart from the load's
read models each projection's documents compared, document by document, with what a fresh
            rebuild from the event store would write (conveyor/readmodels/rebuild.py
            project_in_memory): equal, or the number of documents that differ
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chaos.environment import Environment
from chaos.load import LoadRecord, OutcomeCollector
from conveyor.aggregates import AGGREGATES
from conveyor.application.rejections import COMMAND_REJECTED, is_marker, is_rejection_stream
from conveyor.bootstrap import (
    command_queues,
    describe_read_store,
    open_read_store,
    process_manager_queue,
    projection_queue,
)
from conveyor.eventstore.sqlite import SqliteEventStore
from conveyor.readmodels.collections import ProjectionCollections
from conveyor.readmodels.projections import PROJECTIONS
from conveyor.readmodels.rebuild import project_in_memory
from domain.fulfilment.events import CODEC as WORKFLOW_CODEC
from domain.fulfilment.outgoing import commands_for
from domain.fulfilment.workflow import STREAM_PREFIX as WORKFLOW_STREAM_PREFIX

EVENTS_PER_COMMAND = 1


@dataclass
class Verdict:
    scenario: int
    title: str
    sent: int = 0
    confirmed: int = 0
    indeterminate: int = 0
    applied: int = 0
    accepted: int = 0
    rejected: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    read_model_mismatches: dict[str, int] = field(default_factory=dict)
    faults: str = ""
    read_store: str = ""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lost_ids: list[str] = field(default_factory=list)
    duplicated_ids: list[str] = field(default_factory=list)
    derived: int = 0
    """Commands the process manager recorded in its workflow streams (sent by it)."""
    derived_applied: int = 0
    derived_lost: int = 0
    derived_duplicated: int = 0
    derived_duplicated_ids: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    """Scenario-specific measurements (the cluster scenarios' failover times)."""

    @property
    def read_models_equal_rebuild(self) -> bool:
        return bool(self.read_model_mismatches) and not any(self.read_model_mismatches.values())

    @property
    def passed(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.derived_lost == 0
            and self.derived_duplicated == 0
            and self.unexpected == 0
            and self.read_models_equal_rebuild
            and not self.problems
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "passed": self.passed,
            "sent": self.sent,
            "confirmed": self.confirmed,
            "indeterminate": self.indeterminate,
            "applied": self.applied,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "unexpected": self.unexpected,
            "derived": self.derived,
            "derived_applied": self.derived_applied,
            "derived_lost": self.derived_lost,
            "derived_duplicated": self.derived_duplicated,
            "derived_duplicated_ids": self.derived_duplicated_ids[:50],
            "dead_letters": self.dead_letters,
            "read_models_equal_rebuild": self.read_models_equal_rebuild,
            "read_model_mismatches": self.read_model_mismatches,
            "faults": self.faults,
            "read_store": self.read_store,
            "seconds": round(self.seconds, 1),
            "problems": self.problems,
            "notes": self.notes,
            "lost_ids": self.lost_ids[:50],
            "duplicated_ids": self.duplicated_ids[:50],
            "figures": self.figures,
        }


@dataclass
class StoredCommands:
    events: Counter[str] = field(default_factory=Counter)
    """Order-stream events per command_id: the commands' effects."""
    rejections: Counter[str] = field(default_factory=Counter)
    """CommandRejected records per command_id."""
    other: Counter[str] = field(default_factory=Counter)
    """Any other stored event per command_id (should be none)."""
    workflow_events: int = 0
    """Events in the process manager's workflow streams (its own bookkeeping)."""
    derived: dict[str, str] = field(default_factory=dict)
    """command_id → type of every command a workflow stream records."""

    def applied(self) -> set[str]:
        """Commands with an effect or a rejection record."""
        return set(self.events) | set(self.rejections)

    def derived_effects(self) -> tuple[set[str], list[str], list[str]]:
        """The process manager's commands: (applied, never applied, applied twice)."""
        applied = {cid for cid in self.derived if self.events[cid] or self.rejections[cid]}
        lost = sorted(set(self.derived) - applied)
        twice = sorted(cid for cid in self.derived if self.events[cid] > EVENTS_PER_COMMAND)
        return applied, lost, twice


async def stored_commands(env: Environment) -> StoredCommands:
    """Every stored event by command_id, sorted into effects and rejection records."""
    store = await SqliteEventStore(env.event_store).open()
    stored = StoredCommands()
    try:
        position = 0
        while page := await store.read_all(after=position, limit=5000):
            for event in page:
                if event.stream_id.startswith(WORKFLOW_STREAM_PREFIX):
                    stored.workflow_events += 1
                    order_id = event.stream_id.removeprefix(WORKFLOW_STREAM_PREFIX)
                    recorded = WORKFLOW_CODEC.from_data(
                        event.type, event.schema_version, event.data
                    )
                    for command in commands_for(order_id, recorded):
                        stored.derived[command.command_id] = command.command_type
                    continue
                command_id = str(event.metadata.get("command_id"))
                in_aggregate = AGGREGATES.of_stream(event.stream_id) is not None
                if in_aggregate and is_marker(event):  # a rejection, in the aggregate's stream
                    stored.rejections[command_id] += 1
                elif in_aggregate:
                    stored.events[command_id] += 1
                elif is_rejection_stream(event.stream_id) and event.type == COMMAND_REJECTED:
                    stored.rejections[command_id] += 1
                else:
                    stored.other[command_id] += 1
            position = page[-1].position
    finally:
        await store.close()
    return stored


async def events_by_command(env: Environment) -> Counter[str]:
    """How many order events (effects) carry each command_id; rejection records are not
    counted."""
    return (await stored_commands(env)).events


def work_queue_names(env: Environment) -> list[str]:
    """The work and retry queues (not the DLQs) of commands, projections and, when the
    scenario runs one, the process manager."""
    settings = env.settings()
    queues = [q for _, q in command_queues(settings)]
    queues += [projection_queue(settings, p) for p in PROJECTIONS]
    if any("process-manager" in w.only.split(",") for w in env.processes):
        # Without one, its queue (declared by the gateway's process) only fills up.
        queues.append(process_manager_queue(settings))
    return [q.name for wq in queues for q in wq.all_queues() if q.name != wq.dead_letter_queue]


def dead_letter_queue_names(env: Environment) -> list[str]:
    settings = env.settings()
    queues = [q for _, q in command_queues(settings)]
    queues += [projection_queue(settings, p) for p in PROJECTIONS]
    queues.append(process_manager_queue(settings))
    return [q.dead_letter_queue for q in queues]


async def settle(
    env: Environment,
    outcomes: OutcomeCollector,
    expected: set[str],
    *,
    within: float = 120.0,
) -> set[str]:
    """Wait until every `expected` command, and every command a workflow recorded, is
    applied and the work and retry queues are empty (twice in a row, a moment apart: late
    redeliveries would show duplicates). Returns what is still missing when time runs out
    (empty when settled)."""
    deadline = time.monotonic() + within
    quiet_since: float | None = None
    missing = set(expected)
    while time.monotonic() < deadline:
        try:
            stored = await stored_commands(env)
            applied = stored.applied() | outcomes.rejected()
            missing = (expected | set(stored.derived)) - applied
            depths = await env.queue_depths(work_queue_names(env)) if not missing else {}
        except Exception:  # the broker may be restarting: keep waiting
            missing, depths = missing or expected, {}
        if not missing and not any(depths.values()):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 1.5:
                return set()
        else:
            quiet_since = None
        await asyncio.sleep(0.5)
    return missing


async def compare_read_models(env: Environment) -> dict[str, int]:
    """Per projection: how many documents differ from a fresh rebuild (missing, extra or
    different)."""
    store = await SqliteEventStore(env.event_store).open()
    read_store = await open_read_store(env.settings())  # SQLite, or MongoDB (scenario 13)
    try:
        collections = ProjectionCollections(read_store, cache_seconds=0)
        mismatches = {}
        for projection in PROJECTIONS:
            expected = await project_in_memory(projection.name, store)
            collection = (await collections.active(projection.name)).collection
            actual = {
                doc.id: doc.body for doc in await read_store.find(collection, limit=10_000_000)
            }
            ids = expected.keys() | actual.keys()
            mismatches[projection.name] = sum(
                1 for doc_id in ids if expected.get(doc_id) != actual.get(doc_id)
            )
        return mismatches
    finally:
        await read_store.close()
        await store.close()


async def read_models_settle(
    env: Environment, *, within: float = 90.0, target: dict[str, int] | None = None
) -> dict[str, int]:
    """Poll until every read model equals a rebuild (projections catch up asynchronously),
    or until the mismatches are `target`; the last comparison when time runs out."""
    deadline = time.monotonic() + within
    last_error: Exception | None = None
    while True:
        try:
            mismatches = await compare_read_models(env)
        except Exception as error:  # e.g. a collection not created yet
            mismatches = {p.name: -1 for p in PROJECTIONS}
            last_error = error
        else:
            last_error = None
            if mismatches == target if target is not None else not any(mismatches.values()):
                return mismatches
        if time.monotonic() > deadline:
            if last_error is not None:
                raise last_error
            return mismatches
        await asyncio.sleep(1.0)


async def check(
    verdict: Verdict,
    env: Environment,
    load: LoadRecord,
    outcomes: OutcomeCollector,
    *,
    dead_letters_expected: dict[str, int] | None = None,
    settle_within: float = 120.0,
    also_sent: set[str] | None = None,
) -> Verdict:
    """Settle, then count. `dead_letters_expected`: DLQ name → messages that belong there
    (any other dead letter is a problem); `also_sent`: ids of messages sent besides the
    load's commands (fuzz), whose effects are not unexpected."""
    confirmed = load.confirmed
    missing = await settle(env, outcomes, confirmed, within=settle_within)
    if missing:
        verdict.notes.append(f"not settled after {settle_within:g}s: {len(missing)} missing")
    stored = await stored_commands(env)
    counts, records = stored.events, stored.rejections
    rejected = outcomes.rejected()
    applied = {cid for cid in confirmed if counts.get(cid) or cid in rejected}
    verdict.sent = len(load.sent)
    verdict.confirmed = len(confirmed)
    verdict.indeterminate = len(load.failed)
    verdict.applied = len(applied)
    verdict.accepted = sum(1 for cid in confirmed if counts.get(cid))
    verdict.rejected = sum(1 for cid in confirmed if cid in rejected and not counts.get(cid))
    lost = sorted(confirmed - applied)
    verdict.lost, verdict.lost_ids = len(lost), lost
    derived = stored.derived
    duplicated = sorted(
        cid for cid, n in counts.items() if n > EVENTS_PER_COMMAND and cid not in derived
    )
    verdict.duplicated, verdict.duplicated_ids = len(duplicated), duplicated
    verdict.derived = len(derived)
    derived_applied, derived_lost, derived_twice = stored.derived_effects()
    verdict.derived_applied = len(derived_applied)
    verdict.derived_lost = len(derived_lost)
    if derived_lost:
        verdict.problems.append(
            f"{len(derived_lost)} commands the process manager recorded were never "
            f"applied, e.g. {derived_lost[:3]}"
        )
    verdict.derived_duplicated, verdict.derived_duplicated_ids = len(derived_twice), derived_twice
    if derived:
        verdict.notes.append(
            "process manager's commands recorded / applied: "
            + ", ".join(
                f"{t} {n}/{sum(1 for c, ct in derived.items() if ct == t and c in derived_applied)}"
                for t, n in Counter(derived.values()).most_common()
            )
        )
    every = counts + records + stored.other
    unexpected = set(every) - load.sent - (also_sent or set()) - set(derived)
    verdict.unexpected = sum(every[cid] for cid in unexpected)
    if unexpected:
        verdict.problems.append(f"events of commands never sent: {sorted(unexpected)[:5]}")
    verdict.read_store = describe_read_store(env.settings())
    verdict.read_model_mismatches = await read_models_settle(env)
    depths = await env.queue_depths(dead_letter_queue_names(env))
    verdict.dead_letters = {name: n for name, n in depths.items() if n}
    for name, n in depths.items():
        wanted = (dead_letters_expected or {}).get(name, 0)
        if n != wanted:
            verdict.problems.append(f"{name} holds {n} dead letters, expected {wanted}")
    crashed = env.crashed()
    if crashed:
        verdict.problems.append(
            "worker processes exited by themselves: "
            + ", ".join(f"{w.only} (exit {w.process.returncode})" for w in crashed)
        )
    contradictory = sorted(cid for cid in counts if cid in rejected or records.get(cid))
    if contradictory:
        verdict.problems.append(
            f"{len(contradictory)} commands were rejected (outcome or record) and applied; "
            f"rules {dict(Counter(outcomes.rules.get(c) for c in contradictory))}, e.g. "
            f"{contradictory[:2]}"
        )
    unrecorded = sorted(rejected - set(records))
    if unrecorded:
        verdict.problems.append(
            f"{len(unrecorded)} rejected outcomes without a rejection record, e.g. {unrecorded[:2]}"
        )
    recorded_twice = sorted(cid for cid, n in records.items() if n > 1)
    if recorded_twice:
        verdict.problems.append(
            f"{len(recorded_twice)} commands with more than one rejection record, e.g. "
            f"{recorded_twice[:2]}"
        )
    if stored.other:
        verdict.problems.append(
            f"{sum(stored.other.values())} stored events outside the order and rejection streams"
        )
    replayed = sum(1 for cid in rejected if len(outcomes.statuses[cid]) > 1)
    if replayed:
        verdict.notes.append(
            f"{replayed} rejected commands got their outcome more than once (a redelivery "
            "answered from the rejection record)"
        )
    gaps = sum(w.log_text().count("must wait for version") for w in env.processes)
    if gaps:
        verdict.notes.append(f"{gaps} projection deliveries found a gap and were retried")
    duplicates_reported = sum(s.count("duplicate") for s in outcomes.statuses.values())
    if duplicates_reported:
        verdict.notes.append(
            f"{duplicates_reported} redelivered commands recognised as duplicates (no effect)"
        )
    return verdict
