"""The chaos scenarios. Each runs in its own Environment (vhost, SQLite files, worker
processes), drives a load, injects its fault while the load is in flight, then hands what
it saw to the checker.

    1 SIGKILL command workers (two competing) repeatedly during the load
    2 SIGKILL the gateway while it publishes
    3 SIGKILL the projection worker mid-stream
    4 restart RabbitMQ (rabbitmqctl stop_app / start_app); nobody restarts the workers
    5 the event store locked by another process for 10 s
    6 poison messages (a command that always fails transiently, an event a projection
      cannot apply) → DLQs with headers; after the fix, a re-drive applies them once
    7 fuzzed messages on the command queue beside valid traffic
    8 concurrent commands on one order
    9 a projection queue deleted (as from the console) during the load; the worker
      recreates it by itself, and the events it lost are healed from the event store
   10 a memory alarm during the load (set_vm_memory_high_watermark, then back): publishes
      block; they time out and are retried, readiness says "blocked". Only against a node
      of your own: CONVEYOR_CHAOS_ALARM_NODE names it (never a shared broker)
   12 both stores (event store and read store) locked for 5 minutes under load, with the
      default retry ladder (about 2.5 minutes): consumers pause, nothing is dead-lettered
   13 the same with a MongoDB read store (the SecantusDB test server), stopped for 5 minutes
   17, 18 the fulfilment workflow and its aggregates: chaos/workflow_scenarios.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx

from chaos.checker import Verdict, check, events_by_command, read_models_settle, settle
from chaos.environment import REPO, Environment, WorkerProcess, eventually
from chaos.fuzz import FUZZ_HEADER, fuzz_messages
from chaos.load import (
    Command,
    LoadGenerator,
    LoadRecord,
    OutcomeCollector,
    Outgoing,
    Workload,
    one_order_workload,
    order_workload,
)
from conveyor.readmodels.projections import PROJECTIONS
from messaging.failures import (
    ATTEMPTS,
    DEAD_LETTERED_AT,
    ERROR_MESSAGE,
    ERROR_TYPE,
    FAILURE_CLASS,
    NO_MESSAGE_ID,
    ORIGINAL_QUEUE,
)

COMMAND_QUEUE = "orders.commands"
COMMAND_DLQ = "orders.commands.dlq"
STORE_OUTAGE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Sizes:
    commands: int = 5000
    """Commands of scenario 1; the other scenarios scale from it."""
    fuzz: int = 1000
    concurrent: int = 50
    kills: int = 6
    store_away_seconds: float = 300.0
    """How long scenario 12 keeps both stores locked."""
    workflows: int = 1000
    """Fulfilment workflows of scenario 17."""
    workflow_timeout: float = 20.0
    """Scenario 17's CONVEYOR_FULFILMENT_TIMEOUT: the unanswered payments end within it (5 s
    at 1,000 workflows on 2 busy cores timed out 775 of them before their payment came)."""

    @classmethod
    def quick(cls, commands: int | None = None) -> Sizes:
        # Scenario 12 keeps its 5 minutes: shorter would not outlast the retry ladder.
        return cls(
            commands=commands or 500,
            fuzz=100,
            concurrent=50,
            kills=2,
            workflows=100,
            workflow_timeout=5.0,
        )

    def scaled(self, fraction: float, floor: int = 200) -> int:
        return max(floor, int(self.commands * fraction))


@dataclass(frozen=True, slots=True)
class Scenario:
    number: int
    title: str
    run: Callable[[Sizes], Awaitable[Verdict]]
    restarts_broker: bool = False


Fault = Callable[[Environment, OutcomeCollector, int, int, Sizes], Awaitable[str]]


# -- shared steps ------------------------------------------------------------------------------


async def start_workers(env: Environment, *kinds: str) -> None:
    await asyncio.gather(*(env.start(kind) for kind in kinds))


async def apply_setup(
    env: Environment, load: LoadGenerator, outcomes: OutcomeCollector, setup: list[Command]
) -> None:
    """Publish the setup commands and wait until they are applied."""
    if not setup:
        return
    record = await load.publish([Outgoing.command(c) for c in setup])
    if record.failed:
        raise RuntimeError(f"setup commands not confirmed: {record.failed}")
    missing = await settle(env, outcomes, record.confirmed, within=60)
    if missing:
        raise RuntimeError(f"setup commands not applied: {sorted(missing)[:5]}")


async def progress_reaches(outcomes: OutcomeCollector, count: float, *, within: float) -> int:
    await eventually(lambda: outcomes.received >= count, within=within, interval=0.02)
    return outcomes.received


async def kill_repeatedly(
    env: Environment,
    outcomes: OutcomeCollector,
    kind: str,
    *,
    total: int,
    kills: int,
    baseline: int,
    keep: int = 1,
) -> list[str]:
    """SIGKILL a random `kind` process at evenly spread points of the load (measured in
    outcomes), starting a replacement each time; `keep` processes stay running."""
    rng = random.Random(kind)
    moments = []
    for k in range(1, kills + 1):
        reached = await progress_reaches(outcomes, baseline + total * k / (kills + 1), within=180)
        await asyncio.sleep(rng.random() * 0.3)  # not always on a batch boundary
        victims = env.running(kind)
        if kind == "gateway":  # the one holding the lease and publishing, not a standby
            with contextlib.suppress(TimeoutError):
                await eventually(
                    lambda: [w for w in env.running(kind) if "is active from" in w.log_text()],
                    within=15,
                )
            victims = [w for w in env.running(kind) if "is active from" in w.log_text()]
        if not victims:
            continue
        victim = rng.choice(victims)
        await env.kill(victim)
        moments.append(f"{reached - baseline}/{total}")
        replacements = [env.start(kind, wait=False) for _ in range(keep - len(env.running(kind)))]
        await asyncio.gather(*replacements)
    return moments


def log_lines(workers: list[WorkerProcess], needle: str) -> int:
    return sum(w.log_text().count(needle) for w in workers)


def run_standard_load(
    title: str,
    number: int,
    *,
    kinds: tuple[str, ...],
    workload: Callable[[Sizes], Workload],
    fault: Fault,
    env_overrides: dict[str, str] | None = None,
    rate: Callable[[Sizes], float | None] = lambda sizes: None,
    settle_within: float = 180.0,
    after_check: Callable[[Environment, Verdict], None] | None = None,
) -> Callable[[Sizes], Awaitable[Verdict]]:
    """Start `kinds`, apply the setup, then run the load and `fault` side by side and check.
    `fault(env, outcomes, total, baseline, sizes)` returns a description of what it did."""

    async def run(sizes: Sizes) -> Verdict:
        verdict = Verdict(number, title)
        started = time.monotonic()
        work = workload(sizes)
        async with Environment(f"s{number}", env=env_overrides) as env:
            try:
                await start_workers(env, *kinds)
                async with (
                    OutcomeCollector(env.amqp_url) as outcomes,
                    LoadGenerator(env.amqp_url, COMMAND_QUEUE, rate=rate(sizes)) as load,
                ):
                    await apply_setup(env, load, outcomes, work.setup)
                    baseline = outcomes.received
                    _, verdict.faults = await asyncio.gather(
                        load.publish([Outgoing.command(c) for c in work.commands]),
                        fault(env, outcomes, len(work.commands), baseline, sizes),
                    )
                    await check(verdict, env, load.record, outcomes, settle_within=settle_within)
                    await _note_unbounded_consumers(env, verdict)
                    if after_check is not None:
                        after_check(env, verdict)
            finally:
                verdict.seconds = time.monotonic() - started
                _keep_logs_on_failure(env, verdict)
        return verdict

    return run


async def _note_unbounded_consumers(env: Environment, verdict: Verdict) -> None:
    """GUIDE §2 "bounded everything": a consumer without a prefetch limit takes the whole
    backlog, and a SIGKILL then sends all of it round again."""
    with contextlib.suppress(Exception):
        limits = await env.consumer_prefetch()
        unbounded = sorted(q for q, prefetch in limits.items() if 0 in prefetch)
        if unbounded:
            verdict.notes.append(
                f"consumers without a prefetch limit (prefetch 0, CONVEYOR_PREFETCH ignored) "
                f"on {', '.join(unbounded)}"
            )


def _keep_logs_on_failure(env: Environment, verdict: Verdict) -> None:
    if not verdict.passed:
        env.keep_directory = True
        verdict.notes.append(f"logs and databases kept in {env.directory}")


# -- 1, 2, 3: SIGKILL ----------------------------------------------------------------------------


def _killing(kind: str, keep: int) -> Fault:
    async def fault(
        env: Environment, outcomes: OutcomeCollector, total: int, baseline: int, sizes: Sizes
    ) -> str:
        moments = await kill_repeatedly(
            env, outcomes, kind, total=total, kills=sizes.kills, baseline=baseline, keep=keep
        )
        return f"{len(moments)} SIGKILL of {kind} at {', '.join(moments)} commands"

    return fault


KINDS = ("commands", "commands", "gateway", "projections")

scenario_1 = run_standard_load(
    "SIGKILL command workers (2 competing)",
    1,
    kinds=KINDS,
    workload=lambda s: order_workload(s.commands, prefix="s1"),
    fault=_killing("commands", keep=2),
)
scenario_2 = run_standard_load(
    "SIGKILL the gateway while it publishes",
    2,
    # an active gateway and a standby, as in production: the standby takes the lease over
    kinds=(*KINDS, "gateway"),
    workload=lambda s: order_workload(s.scaled(0.4), prefix="s2"),
    fault=_killing("gateway", keep=2),
    rate=lambda s: s.scaled(0.4) / 25,  # spread over ~25 s: every kill hits a busy relay
)
scenario_3 = run_standard_load(
    "SIGKILL the projection worker mid-stream",
    3,
    kinds=KINDS,
    workload=lambda s: order_workload(s.scaled(0.4), prefix="s3"),
    fault=_killing("projections", keep=1),
)


# -- 4: broker restart ---------------------------------------------------------------------------


async def rabbitmqctl(*args: str, within: float = 120) -> int:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        return await asyncio.wait_for(process.wait(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1


async def restart_broker() -> float:
    """stop_app, a pause, start_app, then await_startup until it succeeds (it can exit 69
    before the node has registered). Returns the seconds the broker was away."""
    if shutil.which("rabbitmqctl") is None:
        raise RuntimeError("scenario 4 needs a local rabbitmqctl")
    stopped = time.monotonic()
    if await rabbitmqctl("stop_app") != 0:
        raise RuntimeError("rabbitmqctl stop_app failed")
    try:
        await asyncio.sleep(3)
    finally:
        for _ in range(5):
            if await rabbitmqctl("start_app") == 0:
                break
            await asyncio.sleep(2)
        for _ in range(60):
            if await rabbitmqctl("await_startup", within=30) == 0:
                break
            await asyncio.sleep(1)
        else:
            raise RuntimeError("RabbitMQ did not come back (rabbitmqctl await_startup)")
    return time.monotonic() - stopped


async def _broker_restart(
    env: Environment, outcomes: OutcomeCollector, total: int, baseline: int, sizes: Sizes
) -> str:
    before = {id(w) for w in env.processes}
    reached = await progress_reaches(outcomes, baseline + total * 0.3, within=180)
    away = await restart_broker()
    if {id(w) for w in env.processes} != before:
        return "workers were restarted (should not happen)"
    return f"broker stop_app/start_app at {reached - baseline}/{total}, away {away:.1f}s"


_scenario_4 = run_standard_load(
    "restart RabbitMQ during the load",
    4,
    kinds=KINDS,
    workload=lambda s: order_workload(s.scaled(0.3), prefix="s4"),
    fault=_broker_restart,
    rate=lambda s: s.scaled(0.3) / 25,  # spread over ~25 s, so the restart falls inside
    settle_within=240,
)


async def scenario_4(sizes: Sizes) -> Verdict:
    verdict = await _scenario_4(sizes)
    verdict.notes.append(
        "the harness restarted no worker: they recovered by themselves (none exited)"
    )
    return verdict


# -- 5: event store unavailable --------------------------------------------------------------------

LOCK_HOLDER = """
import sys, time
from conveyor.embedded.sqlite_library import sqlite3  # the library the workers link
connection = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("ROLLBACK")
print("released", flush=True)
"""


async def lock_event_store(path: Path, seconds: float) -> float:
    """Another process holds an exclusive transaction on the event store for `seconds`:
    every append fails with "database is locked" (WAL readers carry on)."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOCK_HOLDER, str(path), str(seconds), stdout=asyncio.subprocess.PIPE
    )
    assert holder.stdout is not None
    line = await asyncio.wait_for(holder.stdout.readline(), 60)
    if line.strip() != b"locked":
        raise RuntimeError(f"could not lock the event store: {line!r}")
    locked_at = time.monotonic()
    await holder.wait()
    return time.monotonic() - locked_at


async def _store_outage(
    env: Environment, outcomes: OutcomeCollector, total: int, baseline: int, sizes: Sizes
) -> str:
    reached = await progress_reaches(outcomes, baseline + total * 0.25, within=180)
    held = await lock_event_store(env.event_store, STORE_OUTAGE_SECONDS)
    retried = log_lines(env.running("commands"), "failed on attempt")
    return f"event store locked {held:.1f}s at {reached - baseline}/{total}; {retried} retries"


scenario_5 = run_standard_load(
    "event store locked for 10 s",
    5,
    kinds=KINDS,
    workload=lambda s: order_workload(s.scaled(0.3), prefix="s5"),
    fault=_store_outage,
    # a retry budget that outlasts the outage: 0.5 + 1 + 2 + 4 x 5 = 23.5 s
    env_overrides={"CONVEYOR_RETRY_DELAYS": "0.5,1,2,4", "CONVEYOR_MAX_ATTEMPTS": "8"},
    rate=lambda s: s.scaled(0.3) / 20,
)


# -- 12: both stores away longer than the retry ladder ---------------------------------------


async def _long_outage(
    env: Environment, outcomes: OutcomeCollector, total: int, baseline: int, sizes: Sizes
) -> str:
    reached = await progress_reaches(outcomes, baseline + total * 0.25, within=180)
    files = [env.event_store]
    if "://" not in env.read_store:  # a SQLite read store; a MongoDB one is scenario 13's
        files.append(Path(env.read_store))
    held = await asyncio.gather(
        *(lock_event_store(path, sizes.store_away_seconds) for path in files)
    )
    workers = env.running("commands") + env.running("projections")
    pauses = log_lines(workers, "pausing")
    retried = log_lines(workers, "failed on attempt")
    return (
        f"event store and read store locked {min(held):.0f}s at {reached - baseline}/{total} "
        f"(default ladder, ~156 s); {pauses} pauses, {retried} attempts spent"
    )


scenario_12 = run_standard_load(
    "both stores locked for 5 minutes",
    12,
    kinds=KINDS,
    workload=lambda s: order_workload(s.scaled(0.3), prefix="s12"),
    fault=_long_outage,
    # The default ladder (1, 5, 30, 120 s; 5 attempts) is what must not be spent. Probes
    # back off to 10 s so that the settling is not mostly waiting.
    env_overrides={
        "CONVEYOR_RETRY_DELAYS": "1,5,30,120",
        "CONVEYOR_MAX_ATTEMPTS": "5",
        "CONVEYOR_OUTAGE_PROBE_MAX_DELAY": "10",
    },
    # still publishing for the first minute of the outage
    rate=lambda s: s.scaled(0.3) / 60,
    settle_within=300.0,
)


# -- 13: the MongoDB read store stopped longer than the retry ladder --------------------------


def _secantus() -> str | None:
    """The test server's command, on PATH or beside this Python (a venv not activated)."""
    beside = Path(sys.executable).parent / "secantusd-py"
    return shutil.which("secantusd-py") or (str(beside) if beside.exists() else None)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MongoTestServer:
    """The MongoDB wire-protocol test server (SecantusDB, test-only) as a process of its
    own, on a data directory that outlives its stops."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/conveyor"

    async def start(self) -> None:
        executable = shutil.which("secantusd-py") or str(
            Path(sys.executable).parent / "secantusd-py"
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            executable,
            "--port",
            str(self.port),
            "--storage-path",
            str(self.directory),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

        async def answers() -> bool:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return True
            return False

        await eventually(answers, within=30, what="the MongoDB test server")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()
        self.process = None


async def scenario_13(sizes: Sizes) -> Verdict:
    if not (
        shutil.which("secantusd-py") or (Path(sys.executable).parent / "secantusd-py").exists()
    ):
        verdict = Verdict(13, "MongoDB read store stopped for 5 minutes")
        verdict.problems.append("SecantusDB is not installed (pip install SecantusDB): no server")
        return verdict
    import tempfile

    server = MongoTestServer(Path(tempfile.mkdtemp(prefix="conveyor-chaos-s13-mongo-")))
    await server.start()

    async def stopped_server(
        env: Environment, outcomes: OutcomeCollector, total: int, baseline: int, sizes: Sizes
    ) -> str:
        reached = await progress_reaches(outcomes, baseline + total * 0.25, within=180)
        stopped_at = time.monotonic()
        await server.stop()
        await asyncio.sleep(sizes.store_away_seconds)
        await server.start()
        away = time.monotonic() - stopped_at
        workers = env.running("projections")
        return (
            f"MongoDB read store stopped {away:.0f}s at {reached - baseline}/{total} (default "
            f"ladder, ~156 s); {log_lines(workers, 'pausing')} pauses, "
            f"{log_lines(workers, 'failed on attempt')} attempts spent"
        )

    try:
        return await run_standard_load(
            "MongoDB read store stopped for 5 minutes",
            13,
            kinds=KINDS,
            workload=lambda s: order_workload(s.scaled(0.3), prefix="s13"),
            fault=stopped_server,
            env_overrides={
                "CONVEYOR_READ_STORE": server.url,
                "CONVEYOR_RETRY_DELAYS": "1,5,30,120",
                "CONVEYOR_MAX_ATTEMPTS": "5",
                "CONVEYOR_OUTAGE_PROBE_MAX_DELAY": "10",
            },
            rate=lambda s: s.scaled(0.3) / 60,
            settle_within=300.0,
        )(sizes)
    finally:
        await server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


# -- 6: poison messages, fix, re-drive -----------------------------------------------------

POISON_COMMANDS = "poison-cmd-"
POISON_EVENTS = "poison-evt-"
POISON_PROJECTION = "order_summary"


async def redrive(env: Environment, queue: str, destination: str) -> str:
    """`conveyor dlq redrive QUEUE` when the CLI has it, else the console's "Move messages"
    (a shovel). Returns which one was used."""
    if (REPO / "operations" / "dead_letters.py").exists():
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "conveyor",
            "dlq",
            "redrive",
            queue,
            cwd=REPO,
            env=env.environ(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 120)
        if process.returncode == 0:
            return "conveyor dlq redrive"
        env_note = output.decode(errors="replace").strip().splitlines()[-1:] or [""]
        fallback = f"shovel (conveyor dlq redrive exited {process.returncode}: {env_note[0]})"
    else:
        fallback = "shovel (no `conveyor dlq redrive` yet)"
    await env.management.move_messages(queue, destination)
    return fallback


def _header(message: dict[str, Any], name: str) -> Any:
    return (message.get("properties", {}).get("headers") or {}).get(name)


async def dead_letters(env: Environment, queue: str, count: int) -> list[dict[str, Any]]:
    return await env.peek(queue, count)


def check_dead_letter_headers(
    letters: list[dict[str, Any]], *, error_type: str, failure_class: str, queue: str
) -> list[str]:
    problems = []
    for letter in letters:
        missing = [
            h
            for h in (ATTEMPTS, ERROR_MESSAGE, DEAD_LETTERED_AT, FAILURE_CLASS, ERROR_TYPE)
            if _header(letter, h) in (None, "")
        ]
        if missing:
            problems.append(f"dead letter in {queue} lacks {missing}")
        if _header(letter, ERROR_TYPE) not in (None, error_type):
            problems.append(f"{queue}: error type {_header(letter, ERROR_TYPE)!r}")
        if _header(letter, FAILURE_CLASS) not in (None, failure_class):
            problems.append(f"{queue}: failure class {_header(letter, FAILURE_CLASS)!r}")
        if _header(letter, ORIGINAL_QUEUE) != queue.removesuffix(".dlq"):
            problems.append(f"{queue}: original queue {_header(letter, ORIGINAL_QUEUE)!r}")
    return problems[:10]


async def scenario_6(sizes: Sizes) -> Verdict:
    verdict = Verdict(6, "poison messages → DLQ, fix, re-drive")
    started = time.monotonic()
    poison = max(5, sizes.commands // 500)
    work = order_workload(sizes.scaled(0.1), prefix="s6")
    poison_commands = [
        {
            "type": "CreateOrder",
            "command_id": f"poison-c-{n}",
            "order_id": f"{POISON_COMMANDS}{n}",
            "customer_id": "poisoned",
        }
        for n in range(poison)
    ]
    poison_events = [
        {
            "type": "CreateOrder",
            "command_id": f"poison-e-{n}",
            "order_id": f"{POISON_EVENTS}{n}",
            "customer_id": "poisoned",
        }
        for n in range(poison)
    ]
    commands = work.commands + poison_commands + poison_events
    random.Random(6).shuffle(commands)
    projection_dlq = f"projections.{POISON_PROJECTION}.dlq"
    max_attempts = 3  # of the command workers: the poison reaches the DLQ in 0.7 s
    overrides = {
        "CONVEYOR_CHAOS_FAIL_ORDER_PREFIX": POISON_COMMANDS,
        "CONVEYOR_CHAOS_POISON_ORDER_PREFIX": POISON_EVENTS,
        "CONVEYOR_CHAOS_POISON_PROJECTION": POISON_PROJECTION,
    }
    async with Environment("s6", env=overrides) as env:
        try:
            short_budget = {"CONVEYOR_MAX_ATTEMPTS": str(max_attempts)}
            await asyncio.gather(
                env.start("commands", env=short_budget),
                env.start("commands", env=short_budget),
                env.start("gateway"),
                env.start("projections"),
            )
            async with (
                OutcomeCollector(env.amqp_url) as outcomes,
                LoadGenerator(env.amqp_url, COMMAND_QUEUE) as load,
            ):
                await apply_setup(env, load, outcomes, work.setup)
                await load.publish([Outgoing.command(c) for c in commands])
                poisoned = {c["command_id"] for c in poison_commands}
                # Everything else flows while the poison sits in the DLQs.
                missing = await settle(env, outcomes, load.record.confirmed - poisoned, within=120)
                if missing:
                    verdict.problems.append(f"{len(missing)} healthy commands stuck behind poison")
                depths = await eventually(
                    lambda: _depths_reach(env, {COMMAND_DLQ: poison, projection_dlq: poison}),
                    within=60,
                    what="poison in both DLQs",
                )
                # … and every read model but the poisoned one already equals a rebuild.
                wanted = {p.name: 0 for p in PROJECTIONS} | {POISON_PROJECTION: poison}
                mismatches = await read_models_settle(env, within=60, target=wanted)
                if mismatches != wanted:
                    verdict.problems.append(
                        f"before the fix, read-model mismatches {mismatches}, expected {wanted}"
                    )
                applied_early = set(await events_by_command(env)) & poisoned
                if applied_early:
                    verdict.problems.append(
                        f"poison commands applied before the fix: {applied_early}"
                    )
                letters = await dead_letters(env, COMMAND_DLQ, poison * 2)
                verdict.problems += check_dead_letter_headers(
                    letters,
                    error_type="ChaosTransientFailure",
                    failure_class="transient",
                    queue=COMMAND_DLQ,
                )
                attempts = Counter(_header(m, ATTEMPTS) for m in letters)
                if set(attempts) != {max_attempts}:
                    verdict.problems.append(f"attempts on command dead letters: {dict(attempts)}")
                event_letters = await dead_letters(env, projection_dlq, poison * 2)
                verdict.problems += check_dead_letter_headers(
                    event_letters,
                    error_type="ContractViolation",
                    failure_class="invalid",
                    queue=projection_dlq,
                )
                verdict.notes.append(
                    f"before the fix: DLQs {depths}, headers checked on "
                    f"{len(letters) + len(event_letters)} dead letters"
                )
                # The fix is deployed (the flag), then an operator re-drives both DLQs.
                env.fix_flag.touch()
                how = await redrive(env, COMMAND_DLQ, COMMAND_QUEUE)
                how_events = await redrive(env, projection_dlq, projection_dlq.removesuffix(".dlq"))
                verdict.notes.append(f"re-driven with: {how}; {how_events}")
                verdict.faults = (
                    f"{poison} always-failing commands, {poison} events {POISON_PROJECTION} "
                    "cannot apply; fixed, then re-driven"
                )
                await check(verdict, env, load.record, outcomes)
        finally:
            verdict.seconds = time.monotonic() - started
            _keep_logs_on_failure(env, verdict)
    return verdict


async def _depths_reach(env: Environment, wanted: dict[str, int]) -> dict[str, int] | None:
    depths = await env.queue_depths(list(wanted))
    return depths if all(depths[q] >= n for q, n in wanted.items()) else None


# -- 7: fuzzing ------------------------------------------------------------------------------------


async def scenario_7(sizes: Sizes) -> Verdict:
    verdict = Verdict(7, f"{sizes.fuzz} fuzzed messages beside valid traffic")
    started = time.monotonic()
    fuzz = fuzz_messages(sizes.fuzz)
    work = order_workload(max(100, sizes.fuzz // 2), prefix="s7")
    valid = [Outgoing.command(c) for c in work.commands]
    mixed = fuzz + valid
    random.Random(7).shuffle(mixed)
    async with Environment("s7") as env:
        try:
            await start_workers(env, *KINDS)
            async with (
                OutcomeCollector(env.amqp_url) as outcomes,
                LoadGenerator(
                    env.amqp_url, COMMAND_QUEUE, console_publish=env.console_publish
                ) as load,
            ):
                await apply_setup(env, load, outcomes, work.setup)
                await load.publish(mixed)
                fuzz_keys = {m.key for m in fuzz}
                valid_record = LoadRecord(
                    sent=load.record.sent - fuzz_keys,
                    confirmed=load.record.confirmed - fuzz_keys,
                    failed={k: v for k, v in load.record.failed.items() if k not in fuzz_keys},
                )
                await settle(env, outcomes, valid_record.confirmed, within=120)
                # Every fuzzed message ends as a dead letter or with an outcome.
                fuzz_confirmed = load.record.confirmed & fuzz_keys
                depth = 0

                async def all_accounted() -> bool:
                    nonlocal depth
                    depth = (await env.queue_depths([COMMAND_DLQ]))[COMMAND_DLQ]
                    return depth + len(set(outcomes.statuses) & fuzz_keys) >= len(fuzz_confirmed)

                with contextlib.suppress(TimeoutError):
                    await eventually(all_accounted, within=60, interval=0.5)
                letters = await dead_letters(env, COMMAND_DLQ, depth + 100)
                verdict.problems += _account_for_fuzz(verdict, letters, fuzz_confirmed, outcomes)
                verdict.faults = (
                    f"{len(fuzz)} fuzzed messages ({len(fuzz_confirmed)} confirmed), "
                    f"{len(letters)} dead-lettered"
                )
                await check(
                    verdict,
                    env,
                    valid_record,
                    outcomes,
                    dead_letters_expected={COMMAND_DLQ: len(letters)},
                    also_sent=fuzz_keys,
                )
                unsettled = log_lines(env.processes, "could not settle message")
                if unsettled:
                    verdict.problems.append(
                        f"{unsettled} messages could not be settled (rejected to the broker's "
                        "dead-lettering, without a reason header)"
                    )
        finally:
            verdict.seconds = time.monotonic() - started
            _keep_logs_on_failure(env, verdict)
    return verdict


def _account_for_fuzz(
    verdict: Verdict,
    letters: list[dict[str, Any]],
    fuzz_confirmed: set[str],
    outcomes: OutcomeCollector,
) -> list[str]:
    problems: list[str] = []
    in_dlq: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    stamped = 0
    for letter in letters:
        number = _header(letter, FUZZ_HEADER)
        if number is None:
            problems.append("a valid command was dead-lettered: " + letter.get("payload", "")[:80])
            continue
        in_dlq[f"fuzz-{number}"] += 1
        reason = _header(letter, ERROR_TYPE)
        if reason is None:
            deaths = _header(letter, "x-death") or [{}]
            reason = f"no reason header (broker dead-lettered: {deaths[0].get('reason')})"
            problems.append(f"fuzz-{number} dead-lettered without a reason")
        reasons[str(reason)] += 1
        # Every copy has a message_id of its own; the command id comes from the original's.
        if reason == "MissingCommandId" and not _header(letter, NO_MESSAGE_ID):
            stamped += 1
    if stamped:
        verdict.notes.append(
            f"{stamped} MissingCommandId dead letters carry a message_id the dead-letter copy "
            "was given on republishing (aiormq invents one): re-driven, they would be applied"
        )
    with_outcome = set(outcomes.statuses) & fuzz_confirmed
    unaccounted = fuzz_confirmed - set(in_dlq) - with_outcome
    if unaccounted:
        problems.append(f"{len(unaccounted)} fuzzed messages neither dead-lettered nor answered")
    twice = [k for k, n in in_dlq.items() if n > 1]
    if twice:
        verdict.notes.append(f"{len(twice)} fuzzed messages dead-lettered twice (at-least-once)")
    outcome_kinds = Counter(s[0] for k, s in outcomes.statuses.items() if k in with_outcome)
    verdict.notes.append(
        "fuzz: dead letters by reason "
        + json.dumps(dict(reasons.most_common()))
        + f"; outcomes {dict(outcome_kinds)}"
    )
    return problems[:10]


# -- 8: one order, many concurrent commands -------------------------------------------------------


async def scenario_8(sizes: Sizes) -> Verdict:
    verdict = Verdict(8, f"{sizes.concurrent} concurrent commands on one order")
    started = time.monotonic()
    work = one_order_workload(sizes.concurrent, order_id="crowded-1")
    async with Environment("s8") as env:
        try:
            await start_workers(env, *KINDS)
            async with (
                OutcomeCollector(env.amqp_url) as outcomes,
                LoadGenerator(env.amqp_url, COMMAND_QUEUE, window=len(work.commands)) as load,
            ):
                await apply_setup(env, load, outcomes, work.setup)
                await load.publish([Outgoing.command(c) for c in work.commands])
                await check(verdict, env, load.record, outcomes)
                if verdict.rejected:
                    verdict.problems.append(f"{verdict.rejected} of the commands were rejected")
                retried = log_lines(env.processes, "failed on attempt")
                conflicts = Counter(s[0] for s in outcomes.statuses.values())
                verdict.faults = (
                    f"{len(work.commands)} AddItem at once on one order, 2 workers; "
                    f"{retried} went round the retry ladder"
                )
                verdict.notes.append(f"outcomes {dict(conflicts)}")
        finally:
            verdict.seconds = time.monotonic() - started
            _keep_logs_on_failure(env, verdict)
    return verdict


# -- 9: a projection queue deleted during the load ----------------------------------------------

DELETED_PROJECTION = "order_summary"


async def _delete_projection_queue(
    env: Environment, outcomes: OutcomeCollector, total: int, baseline: int, sizes: Sizes
) -> str:
    """Delete the queue as an operator would from the console (its backlog goes with it),
    twice during the load; nobody recreates it but the projection worker itself."""
    queue = f"projections.{DELETED_PROJECTION}"
    moments = []
    for share in (0.3, 0.6):
        reached = await progress_reaches(outcomes, baseline + total * share, within=180)
        connection = await aio_pika.connect(env.amqp_url)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            backlog = declared.declaration_result.message_count or 0
            await channel.queue_delete(queue, if_unused=False, if_empty=False)
        moments.append(f"at {reached - baseline}/{total} with {backlog} queued")
        await eventually(lambda: _exists(env, queue), within=60, interval=0.1)
    return f"{queue} deleted {', '.join(moments)}; recreated by the worker each time"


async def _exists(env: Environment, queue: str) -> bool:
    return await env.management.queue(queue) is not None


def _count_healed(env: Environment, verdict: Verdict) -> None:
    healed = log_lines(env.processes, "from the event store")
    verdict.notes.append(f"{healed} log lines of events healed from the event store")


scenario_9 = run_standard_load(
    "a projection queue deleted during the load",
    9,
    kinds=KINDS,
    workload=lambda s: order_workload(s.scaled(0.3), prefix="s9"),
    fault=_delete_projection_queue,
    env_overrides={"CONVEYOR_RECONCILE_SETTLE_SECONDS": "1"},
    rate=lambda s: s.scaled(0.3) / 15,  # spread over ~15 s: both deletions hit a busy relay
    after_check=_count_healed,
)


# -- 10: a memory alarm during the load ------------------------------------------------------------

ALARM_SECONDS = 20.0
ALARM_NODE = "CONVEYOR_CHAOS_ALARM_NODE"


async def _readiness(worker: WorkerProcess) -> str:
    """The worker's /health/ready answer (its ops port is in its log)."""
    found = re.search(r"metrics and health on (http://\S+?)/", worker.log_text())
    if found is None:
        return "no ops address in the log"
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{found.group(1)}/health/ready")
    return f"{response.status_code} {response.text}"


async def _memory_alarm(
    env: Environment, outcomes: OutcomeCollector, total: int, baseline: int, sizes: Sizes
) -> str:
    node = os.environ.get(ALARM_NODE)
    if not node:
        raise RuntimeError(f"scenario 10 alarms a broker: set {ALARM_NODE} to a node of your own")
    reached = await progress_reaches(outcomes, baseline + total * 0.1, within=180)
    if await rabbitmqctl("-n", node, "set_vm_memory_high_watermark", "0.000001") != 0:
        raise RuntimeError("rabbitmqctl set_vm_memory_high_watermark failed")
    try:
        await asyncio.sleep(ALARM_SECONDS / 2)
        ready = await _readiness(env.running("commands")[0])
        await asyncio.sleep(ALARM_SECONDS / 2)
    finally:
        await rabbitmqctl("-n", node, "set_vm_memory_high_watermark", "0.4")
    blocked = "blocked" in ready
    return (
        f"memory alarm on {node} for {ALARM_SECONDS:g}s at {reached - baseline}/{total}; "
        f"a command worker's readiness meanwhile: {ready[:120]!r}"
        + ("" if blocked else " (NOT reported as blocked)")
    )


def _note_timeouts(env: Environment, verdict: Verdict) -> None:
    held = log_lines(env.processes, "the delivery held")
    verdict.notes.append(f"{held} deliveries held and handled again after a publish failed")
    if "NOT reported as blocked" in verdict.faults:
        verdict.problems.append("readiness did not report the blocked connection")


scenario_10 = run_standard_load(
    "a memory alarm during the load",
    10,
    kinds=KINDS,
    # All at once: a backlog the workers are still working through when the alarm blocks
    # their publishes (the broker blocks a connection only when it publishes; the load
    # generator is blocked too, so nothing new could arrive during the alarm).
    # (2,000 at least: fewer are all handled before rabbitmqctl has even raised the alarm)
    workload=lambda s: order_workload(max(2000, s.scaled(0.4)), prefix="s10"),
    fault=_memory_alarm,
    env_overrides={"CONVEYOR_PUBLISH_TIMEOUT": "3"},
    settle_within=240,
    after_check=_note_timeouts,
)


SCENARIOS: dict[int, Scenario] = {
    s.number: s
    for s in (
        Scenario(1, "SIGKILL command workers", scenario_1),
        Scenario(2, "SIGKILL the gateway", scenario_2),
        Scenario(3, "SIGKILL the projection worker", scenario_3),
        Scenario(4, "restart RabbitMQ", scenario_4, restarts_broker=True),
        Scenario(5, "event store unavailable 10 s", scenario_5),
        Scenario(6, "poison messages and re-drive", scenario_6),
        Scenario(7, "fuzzed messages", scenario_7),
        Scenario(8, "concurrent commands on one order", scenario_8),
        Scenario(9, "a projection queue deleted", scenario_9),
        Scenario(10, "a memory alarm (own node only)", scenario_10),
        Scenario(12, "both stores away 5 minutes", scenario_12),
        Scenario(13, "MongoDB read store away 5 minutes", scenario_13),
    )
}


def single_broker_scenarios() -> dict[int, Scenario]:
    """These and the workflow scenarios 17-18 (chaos/workflow_scenarios.py)."""
    from chaos.workflow_scenarios import WORKFLOW_SCENARIOS  # it builds on this module

    return {**SCENARIOS, **WORKFLOW_SCENARIOS}


def all_scenarios() -> dict[int, Scenario]:
    """The single-broker scenarios and the cluster scenarios 14-16 (chaos/cluster.py, which
    need `make cluster`)."""
    from chaos.cluster import CLUSTER_SCENARIOS  # it builds on this module

    return {**single_broker_scenarios(), **CLUSTER_SCENARIOS}


async def run_scenario(number: int, sizes: Sizes) -> Verdict:
    scenario = all_scenarios()[number]
    try:
        return await scenario.run(sizes)
    except Exception as error:  # a harness failure is a failed scenario, not a crash
        logging.getLogger("chaos").exception("scenario %d could not run", number)
        verdict = Verdict(number, scenario.title)
        verdict.problems.append(f"the scenario could not run: {type(error).__name__}: {error}")
        return verdict
