"""The cluster scenarios: conveyor on the local 3-node RabbitMQ cluster of
scripts/cluster.sh (`make cluster`), nodes killed, restarted and stopped under load.

    14 SIGKILL the node leading orders.commands during the load, restart it 10 s later
    15 a rolling restart of all three nodes under load, one at a time (graceful stop, start,
       then `rabbitmq-upgrade await_online_quorum_plus_one` before the next)
    16 `rabbitmqctl stop_app` on the node the gateway publishes through, start_app 10 s later

Each worker process gets the cluster URL with its hosts rotated, so the processes start on
different nodes, as behind a load balancer. The producer retries every unconfirmed publish
(same command_id) until it is confirmed; the figures show how many it had to retry.

Failover times, per fault, in `Verdict.figures`:
  producer_stall_s  the longest time the producer went without a confirm after the fault
  outcome_stall_s   the longest time without a command outcome (workers, end to end)
  append_stall_s    the longest time without an append to the event store (command workers)
  reconnects        each worker process's own "reconnected … after N s" (messaging/cluster.py)
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from chaos.checker import Verdict, check
from chaos.environment import REPO, Environment
from chaos.load import LoadGenerator, OutcomeCollector, Outgoing, order_workload
from chaos.scenarios import (
    COMMAND_QUEUE,
    KINDS,
    Scenario,
    Sizes,
    _keep_logs_on_failure,
    apply_setup,
    progress_reaches,
)
from conveyor.eventstore.sqlite import SqliteEventStore

SCRIPT = REPO / "scripts" / "cluster.sh"
NODES = (1, 2, 3)
AMQP_BASE = 5790
NODE_DOWN_SECONDS = 10.0
RECONNECTED = re.compile(r"reconnected to RabbitMQ node (\S+) ([\d.]+)s after losing node (\S+)")
CONNECTED = re.compile(r"(?:connected|reconnected) to RabbitMQ node 127\.0\.0\.1:(\d+)")


class ClusterUnavailable(RuntimeError):
    pass


async def _run(*args: str, within: float = 180) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1, f"{' '.join(args)}: timed out after {within:g}s"
    return process.returncode or 0, output.decode(errors="replace").strip()


@dataclass
class Cluster:
    """The 3 nodes of scripts/cluster.sh, driven through that script and rabbitmqctl."""

    user: str = "guest"
    password: str = "guest"

    @staticmethod
    def node_name(node: int) -> str:
        return f"conveyor{node}@localhost"

    @staticmethod
    def amqp_port(node: int) -> int:
        return AMQP_BASE + node

    @staticmethod
    def node_of_port(port: int) -> int:
        return port - AMQP_BASE

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{self.amqp_port(n)}" for n in NODES)
        return f"amqp://{self.user}:{self.password}@{hosts}/"

    def management_url(self, node: int) -> str:
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.amqp_port(node) + 10000}/"

    async def script(self, *args: str) -> str:
        code, output = await _run(str(SCRIPT), *args)
        if code != 0:
            raise RuntimeError(f"scripts/cluster.sh {' '.join(args)} exited {code}: {output}")
        return output

    async def ctl(self, tool: str, node: int, *args: str, within: float = 180) -> str:
        code, output = await _run(tool, "-n", self.node_name(node), *args, within=within)
        if code != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} on node {node} exited {code}: {output}")
        return output

    async def require_running(self) -> None:
        if shutil.which("rabbitmqctl") is None:
            raise ClusterUnavailable("rabbitmq-server is not installed: no cluster scenarios")
        for node in NODES:
            code, _ = await _run("rabbitmqctl", "-n", self.node_name(node), "-q", "await_startup")
            if code != 0:
                raise ClusterUnavailable(f"cluster node {node} is not running: run `make cluster`")

    async def running_nodes(self) -> list[int]:
        code, output = await _run(
            "rabbitmqctl", "-n", self.node_name(1), "-q", "eval", "rabbit_nodes:all_running()."
        )
        return [n for n in NODES if self.node_name(n) in output] if code == 0 else []

    async def queues(self, vhost: str, *, up: list[int] | None = None) -> list[dict[str, Any]]:
        """The vhost's queues (leader, members, online) from the first node that answers."""
        for node in up or NODES:
            parts = urlsplit(self.management_url(node))
            try:
                async with httpx.AsyncClient(
                    base_url=f"http://{parts.hostname}:{parts.port}/api",
                    auth=(self.user, self.password),
                    timeout=10,
                ) as client:
                    response = await client.get(f"/queues/{quote(vhost, safe='')}")
                    response.raise_for_status()
                    queues: list[dict[str, Any]] = response.json()
                    return queues
            except httpx.HTTPError:
                continue
        raise RuntimeError("no node's management API answered")

    async def leader(self, vhost: str, queue: str, *, up: list[int] | None = None) -> int | None:
        for info in await self.queues(vhost, up=up):
            if info["name"] == queue and info.get("leader"):
                return int(str(info["leader"]).removeprefix("conveyor").split("@")[0])
        return None

    async def leaders(self, vhost: str) -> dict[str, int]:
        """How many of the vhost's quorum queues each node leads."""
        counts = {self.node_name(n): 0 for n in NODES}
        for info in await self.queues(vhost):
            if info.get("type") == "quorum" and info.get("leader") in counts:
                counts[str(info["leader"])] += 1
        return counts

    async def await_quorum_plus_one(self, node: int) -> None:
        await self.ctl("rabbitmq-upgrade", node, "-q", "await_online_quorum_plus_one", "-t", "120")


def rotated(url: str, shift: int) -> str:
    """`url` with its list of hosts rotated by `shift`: the process starts on another node."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    listed = hosts.split(",")
    shift %= len(listed)
    order = listed[shift:] + listed[:shift]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{','.join(order)}"))


# -- measurements ---------------------------------------------------------------------------


@dataclass
class FaultMoment:
    what: str
    monotonic: float
    wall: float
    ended: float = 0.0
    """time.monotonic() when the fault was over (node back)."""
    details: dict[str, Any] = field(default_factory=dict)


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch in [start, end] without an entry of `times` (sorted)."""
    inside = [t for t in times if start <= t <= end]
    points = [start, *inside]
    after = [t for t in times if t > end]
    points.append(after[0] if after else end)
    return max(b - a for a, b in itertools.pairwise(points))


async def append_times(env: Environment) -> list[float]:
    """Wall-clock times (epoch seconds) of every order event, in order of appending."""
    store = await SqliteEventStore(env.event_store).open()
    times: list[float] = []
    try:
        position = 0
        while page := await store.read_all(after=position, limit=5000):
            times += [event.occurred_at.timestamp() for event in page]
            position = page[-1].position
    finally:
        await store.close()
    return sorted(times)


def reconnects(env: Environment) -> list[dict[str, Any]]:
    """Every worker process's reconnections, from its log (messaging/cluster.py)."""
    found = []
    for worker in env.processes:
        for match in RECONNECTED.finditer(worker.log_text()):
            to, seconds, lost = match.groups()
            found.append(
                {"process": worker.only, "lost": lost, "to": to, "after_s": float(seconds)}
            )
    return found


def gateway_node(env: Environment, cluster: Cluster) -> int | None:
    """The node the active gateway is connected to, from its own last (re)connection line."""
    for worker in env.running("gateway"):
        found = CONNECTED.findall(worker.log_text())
        if found:
            return cluster.node_of_port(int(found[-1]))
    return None


async def failover_figures(
    env: Environment,
    load: LoadGenerator,
    outcomes: OutcomeCollector,
    moments: list[FaultMoment],
) -> dict[str, Any]:
    appends = await append_times(env)
    offset = time.time() - time.monotonic()  # wall = monotonic + offset
    per_fault = []
    for moment in moments:
        end = max(moment.ended, moment.monotonic) + 5
        per_fault.append(
            {
                "fault": moment.what,
                "producer_stall_s": round(
                    longest_gap(load.record.confirmed_at, moment.monotonic, end), 2
                ),
                "outcome_stall_s": round(
                    longest_gap(outcomes.received_at, moment.monotonic, end), 2
                ),
                "append_stall_s": round(longest_gap(appends, moment.wall, end + offset), 2),
                **moment.details,
            }
        )
    return {
        "faults": per_fault,
        "producer_retried_commands": len(load.record.retried),
        "producer_failed_attempts": load.record.failed_attempts,
        "producer_errors": dict(load.record.attempt_errors.most_common()),
        "reconnects": reconnects(env),
        # Each pause is a page of events published again from the unmoved checkpoint.
        "gateway_pauses": [
            line.split("gateway paused ", 1)[1][:160]
            for worker in env.processes
            if worker.only == "gateway"
            for line in worker.log_text().splitlines()
            if "gateway paused" in line
        ],
    }


# -- the scenarios ------------------------------------------------------------------------------

ClusterFault = Callable[
    [Environment, Cluster, OutcomeCollector, int, int], Awaitable[list[FaultMoment]]
]


def cluster_scenario(
    number: int, title: str, fault: ClusterFault, *, spread_seconds: float
) -> Callable[[Sizes], Awaitable[Verdict]]:
    async def run(sizes: Sizes) -> Verdict:
        verdict = Verdict(number, title)
        started = time.monotonic()
        cluster = Cluster()
        await cluster.require_running()
        work = order_workload(sizes.scaled(0.6), prefix=f"s{number}")
        async with Environment(
            f"s{number}", amqp_base=cluster.url, management_url=cluster.management_url(1)
        ) as env:
            try:
                await asyncio.gather(
                    *(
                        env.start(kind, env={"CONVEYOR_AMQP_URL": rotated(env.amqp_url, i)})
                        for i, kind in enumerate(KINDS)
                    )
                )
                async with (
                    OutcomeCollector(rotated(env.amqp_url, 1)) as outcomes,
                    LoadGenerator(
                        env.amqp_url,
                        COMMAND_QUEUE,
                        rate=len(work.commands) / spread_seconds,
                        retry_for=300,
                    ) as load,
                ):
                    await apply_setup(env, load, outcomes, work.setup)
                    baseline = outcomes.received
                    _, moments = await asyncio.gather(
                        load.publish([Outgoing.command(c) for c in work.commands]),
                        fault(env, cluster, outcomes, len(work.commands), baseline),
                    )
                    verdict.faults = "; ".join(m.what for m in moments)
                    await check(verdict, env, load.record, outcomes, settle_within=300)
                    verdict.figures = await failover_figures(env, load, outcomes, moments)
                    verdict.figures["leaders_after"] = await cluster.leaders(env.vhost)
                    await cluster.ctl("rabbitmq-queues", 1, "-q", "rebalance", "quorum")
                    verdict.figures["leaders_after_rebalance"] = await cluster.leaders(env.vhost)
                    _summarise(verdict)
            finally:
                verdict.seconds = time.monotonic() - started
                _keep_logs_on_failure(env, verdict)
        return verdict

    return run


def _summarise(verdict: Verdict) -> None:
    figures = verdict.figures
    for fault in figures["faults"]:
        verdict.notes.append(
            f"{fault['fault']}: producer without a confirm {fault['producer_stall_s']}s, "
            f"workers without an outcome {fault['outcome_stall_s']}s, "
            f"event store without an append {fault['append_stall_s']}s"
        )
    verdict.notes.append(
        f"producer retried {figures['producer_retried_commands']} commands "
        f"({figures['producer_failed_attempts']} failed attempts: {figures['producer_errors']})"
    )
    verdict.notes.append(
        "worker reconnects: "
        + (
            "; ".join(
                f"{r['process']} {r['lost']} → {r['to']} in {r['after_s']:.1f}s"
                for r in figures["reconnects"]
            )
            or "none"
        )
    )
    pauses = figures["gateway_pauses"]
    verdict.notes.append(
        f"gateway paused {len(pauses)} times" + (f", first: {pauses[0]}" if pauses else "")
    )
    verdict.notes.append(
        f"quorum leaders per node after the faults {figures['leaders_after']}, "
        f"after `rabbitmq-queues rebalance quorum` {figures['leaders_after_rebalance']}"
    )


def _now(what: str, **details: Any) -> FaultMoment:
    return FaultMoment(what, time.monotonic(), time.time(), details=details)


async def _kill_command_queue_leader(
    env: Environment, cluster: Cluster, outcomes: OutcomeCollector, total: int, baseline: int
) -> list[FaultMoment]:
    reached = await progress_reaches(outcomes, baseline + total * 0.3, within=300)
    leader = await cluster.leader(env.vhost, COMMAND_QUEUE)
    if leader is None:
        raise RuntimeError(f"{COMMAND_QUEUE} has no leader")
    moment = _now(
        f"SIGKILL node {leader} (leader of {COMMAND_QUEUE}) at {reached - baseline}/{total}"
    )
    moment.details["killed_node"] = leader
    await cluster.script("kill-node", str(leader))
    survivors = [n for n in NODES if n != leader]
    new_leader = None
    while time.monotonic() - moment.monotonic < 60:
        new_leader = await cluster.leader(env.vhost, COMMAND_QUEUE, up=survivors)
        if new_leader not in (None, leader):
            break
        await asyncio.sleep(0.2)
    moment.details["new_leader"] = new_leader
    moment.details["leader_elected_after_s"] = round(time.monotonic() - moment.monotonic, 2)
    await asyncio.sleep(max(0.0, NODE_DOWN_SECONDS - (time.monotonic() - moment.monotonic)))
    await cluster.script("start-node", str(leader))
    moment.ended = time.monotonic()
    moment.details["node_down_s"] = round(moment.ended - moment.monotonic, 1)
    moment.details["leader_after_restart"] = await cluster.leader(env.vhost, COMMAND_QUEUE)
    return [moment]


async def _rolling_restart(
    env: Environment, cluster: Cluster, outcomes: OutcomeCollector, total: int, baseline: int
) -> list[FaultMoment]:
    await progress_reaches(outcomes, baseline + total * 0.1, within=300)
    moments = []
    for node in NODES:
        await cluster.await_quorum_plus_one(node)
        moment = _now(f"restart node {node} at {outcomes.received - baseline}/{total}")
        await cluster.script("stop-node", str(node))
        await cluster.script("start-node", str(node))
        moment.ended = time.monotonic()
        moment.details["node_down_s"] = round(moment.ended - moment.monotonic, 1)
        moments.append(moment)
    await cluster.await_quorum_plus_one(1)
    return moments


async def _stop_app_under_gateway(
    env: Environment, cluster: Cluster, outcomes: OutcomeCollector, total: int, baseline: int
) -> list[FaultMoment]:
    reached = await progress_reaches(outcomes, baseline + total * 0.3, within=300)
    node = gateway_node(env, cluster)
    if node is None:
        raise RuntimeError("the gateway's log names no RabbitMQ node")
    moment = _now(f"stop_app on node {node} (the gateway's) at {reached - baseline}/{total}")
    await cluster.ctl("rabbitmqctl", node, "-q", "stop_app")
    await asyncio.sleep(NODE_DOWN_SECONDS)
    await cluster.ctl("rabbitmqctl", node, "-q", "start_app")
    await cluster.ctl("rabbitmqctl", node, "-q", "await_startup")
    moment.ended = time.monotonic()
    moment.details["node_down_s"] = round(moment.ended - moment.monotonic, 1)
    moment.details["gateway_node_after"] = gateway_node(env, cluster)
    return [moment]


CLUSTER_SCENARIOS: dict[int, Scenario] = {
    s.number: s
    for s in (
        Scenario(
            14,
            "SIGKILL the orders.commands leader node",
            cluster_scenario(
                14,
                "SIGKILL the node leading orders.commands, restart it",
                _kill_command_queue_leader,
                spread_seconds=60,
            ),
            restarts_broker=True,
        ),
        Scenario(
            15,
            "rolling restart of the cluster",
            cluster_scenario(
                15,
                "rolling restart of all three nodes under load",
                _rolling_restart,
                spread_seconds=90,
            ),
            restarts_broker=True,
        ),
        Scenario(
            16,
            "stop_app under the gateway",
            cluster_scenario(
                16,
                "stop_app on the node the gateway publishes through",
                _stop_app_under_gateway,
                spread_seconds=60,
            ),
            restarts_broker=True,
        ),
    )
}
