"""The workload of runs with real agents: a few service jobs whose processes really run.

Three service jobs of `sleep`, scaled between 1 and `max_count` instances through random
replicas, recorded as operations in the run's `History` (same format, same retries and
linearizability check as the control-plane workload). A poller records, as seen through the
API, where allocations sit and what each node offers, so oversubscription can be checked
offline. Every job process carries `RUN_ENV=<marker>` in its environment: the OS, not the
API, then says which processes belong to this run (for the crash storm, the final process
count, and the teardown sweep).

Runs of the overload nemesis add a burst job (`with_bursts`): tiny allocations the nemesis
scales by hundreds at once and back to none, recorded like any other scale.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import psutil

from .history import OK, History, Op
from .workload import Workload, WorkloadConfig

RUN_ENV = "HACONTROL_CHAOS_RUN"
NAMESPACE = "chaos"


@dataclass
class AgentsConfig:
    jobs: int = 3
    max_count: int = 3
    cpu: float = 0.25
    memory_mb: int = 64
    # Per agent: room for 6 instances, so two agents hold every job at its largest (9) but
    # one alone cannot, and losing a node puts the scheduler under capacity pressure.
    agent_cpu: float = 1.5
    agent_memory_mb: int = 384
    clients: int = 2
    pause_s: tuple[float, float] = (0.3, 1.5)  # between one client's operations
    poll_interval_s: float = 0.5
    settle_interval_s: float = 0.5
    settle_stable_samples: int = 3  # consecutive matching samples that count as settled
    workload: WorkloadConfig = field(default_factory=lambda: WorkloadConfig(
        clients=2, namespaces=1, jobs_per_namespace=3, max_count=3))
    # The overload nemesis's job (None: the run has none) and what each allocation asks.
    burst_job: str | None = None
    burst_cpu: float = 0.001
    burst_memory_mb: int = 16


def with_bursts(cfg: AgentsConfig, largest: int, agents: int) -> AgentsConfig:
    """`cfg` with a burst job, and agents with room for `largest` burst allocations over
    `agents` nodes on top of what the service jobs had (a tenth more, so a burst spans
    every agent without one of them holding it all)."""
    share = -(-largest * 11 // 10) // agents
    return replace(cfg, burst_job="burst", agent_cpu=cfg.agent_cpu + share * cfg.burst_cpu,
                   agent_memory_mb=cfg.agent_memory_mb + share * cfg.burst_memory_mb)


def service_spec(marker: str, cfg: AgentsConfig, count: int) -> dict[str, Any]:
    # "S" is the spec id the control-plane model reads back; it never changes here.
    return {"command": ["sleep", "3600"], "env": {"S": "0", RUN_ENV: marker}, "count": count,
            "resources": {"cpu": cfg.cpu, "memory_mb": cfg.memory_mb},
            # Restarts that never give up and back off briefly: a crash storm must not leave
            # an instance failed for longer than the convergence bound.
            "restart": {"policy": "always", "max_restarts": 1000, "window_s": 60,
                        "backoff_s": 0.1, "backoff_max_s": 2.0, "min_uptime_s": 1.0},
            "stop": {"signal": "SIGTERM", "timeout_s": 1.0}}


def burst_spec(marker: str, cfg: AgentsConfig, count: int) -> dict[str, Any]:
    return {**service_spec(marker, cfg, count),
            "resources": {"cpu": cfg.burst_cpu, "memory_mb": cfg.burst_memory_mb}}


class AgentsWorkload(Workload):
    """Scale changes and reads on this run's service jobs, plus a placement poller."""

    def __init__(self, urls: dict[str, str], token: str, history: History, cfg: AgentsConfig,
                 seed: int, t0: float, marker: str) -> None:
        super().__init__(urls, token, history, cfg.workload, seed, t0)
        self.acfg = cfg
        self.marker = marker
        # (operation, job, count) to send first: put_job or scale
        self._queued: list[tuple[str, str, int]] = []
        self._burst_ops = 0

    @property
    def namespaces(self) -> list[str]:
        return [NAMESPACE]

    def service_jobs(self) -> list[str]:
        return [f"svc{i}" for i in range(self.acfg.jobs)]

    def jobs(self) -> list[str]:
        burst = self.acfg.burst_job
        return self.service_jobs() + ([burst] if burst else [])

    def new_op(self, client: int) -> tuple[Op, str, str, Any]:
        rng = self.rng
        self.next_id += 1
        if self._queued:
            f, job, count = self._queued.pop(0)
            if f == "scale":
                op = Op(id=self.next_id, client=client, f="scale", key=NAMESPACE,
                        input={"job": job, "count": count}, invoke=0.0)
                return op, "POST", f"/v1/jobs/{NAMESPACE}/{job}/scale", {"count": count}
            op = Op(id=self.next_id, client=client, f="put_job", key=NAMESPACE,
                    input={"job": job, "spec": 0, "count": count}, invoke=0.0)
            make = burst_spec if job == self.acfg.burst_job else service_spec
            return (op, "PUT", f"/v1/jobs/{NAMESPACE}/{job}",
                    make(self.marker, self.acfg, count))
        # Clients scale and read the service jobs only: the burst job is the nemesis's.
        job = rng.choice(self.service_jobs())
        if rng.random() < 0.7:
            count = rng.randint(1, self.acfg.max_count)
            op = Op(id=self.next_id, client=client, f="scale", key=NAMESPACE,
                    input={"job": job, "count": count}, invoke=0.0)
            return op, "POST", f"/v1/jobs/{NAMESPACE}/{job}/scale", {"count": count}
        op = Op(id=self.next_id, client=client, f="read_job", key=NAMESPACE,
                input={"job": job}, invoke=0.0)
        return op, "GET", f"/v1/jobs/{NAMESPACE}/{job}", None

    async def wait_nodes(self, n: int, timeout_s: float) -> None:
        """Until `n` nodes are registered and ready, so faults find the agents at work."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                status, body = await self.request(self.rng.choice(self.names), "GET",
                                                  "/v1/nodes")
                if status == 200 and sum(x["status"] == "ready" for x in body["nodes"]) >= n:
                    return
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{n} agents did not register within {timeout_s:g}s")

    async def setup_jobs(self) -> None:
        """Submit every job (recorded like any write) before faults begin."""
        for job in self.jobs():
            count = 0 if job == self.acfg.burst_job else self.rng.randint(1, self.acfg.max_count)
            self._queued.append(("put_job", job, count))
            await self.perform(-1)
            op = self.history.ops[-1]
            if op.status != OK or not isinstance(op.output, dict):
                raise RuntimeError(f"could not submit job {job}: {op.status} {op.error}")

    async def scale_burst(self, count: int) -> None:
        """Scale the burst job to `count` (the overload nemesis), recorded like any write."""
        assert self.acfg.burst_job is not None
        self._burst_ops += 1
        # Nothing awaits between queueing and `perform` taking it: no client can take it.
        self._queued.append(("scale", self.acfg.burst_job, count))
        await self.perform(2000 + self._burst_ops)  # a client of its own per burst

    async def client(self, n: int, stop: asyncio.Event) -> None:
        lo, hi = self.acfg.pause_s
        while not stop.is_set():
            await self.perform(n)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(lo, hi))

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self.client(i, stop) for i in range(self.acfg.clients)))

    # ------------------------------------------------------------ placements

    async def poll_placements(self, stop: asyncio.Event) -> None:
        """Record nodes and allocations as each replica in turn has applied them.

        Stale reads on purpose: every replica's applied state is a state the cluster was
        in, and a follower's view is as much bound by capacity as the leader's.
        """
        i = 0
        while not stop.is_set():
            replica = self.names[i % len(self.names)]
            i += 1
            t = self.now()
            try:
                s1, nodes = await self.request(replica, "GET", "/v1/nodes?stale=true")
                s2, allocs = await self.request(replica, "GET", "/v1/allocations?stale=true")
            except (aiohttp.ClientError, TimeoutError, ValueError):
                s1 = s2 = 0
            if s1 == 200 and s2 == 200:
                self.history.polls.append(placement_poll(t, replica, nodes["nodes"],
                                                         allocs["allocations"]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.acfg.poll_interval_s)

    async def api_counts(self) -> dict[str, int]:
        """Each job's count as the cluster holds it now (a linearizable read)."""
        for replica in self.rng.sample(self.names, len(self.names)):
            try:
                status, body = await self.request(replica, "GET", "/v1/jobs")
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
            if status == 200:
                return {j["name"]: int(j["count"]) for j in body["jobs"]
                        if j["namespace"] == NAMESPACE and j.get("status") != "stopped"}
        raise RuntimeError("no replica answered GET /v1/jobs")

    async def settle(self, healed_at: float, bound_s: float) -> dict[str, Any]:
        """Sample the OS until each job has exactly its count of processes, or `bound_s`.

        Settled means `settle_stable_samples` matching samples in a row, so a process about
        to be stopped or started is not mistaken for the final state. The record goes into
        `history.final["os_processes"]` for the checkers.
        """
        expected = await self.api_counts()
        rec: dict[str, Any] = {"healed_at": round(healed_at, 3), "bound_s": bound_s,
                               "expected": expected, "samples": [], "settled_at": None}
        self.history.final["os_processes"] = rec
        streak: list[float] = []
        while self.now() - healed_at <= bound_s:
            sample = await asyncio.to_thread(sample_processes, self.marker)
            sample["t"] = round(self.now(), 3)
            rec["samples"].append(sample)
            if sample["by_job"] == {j: n for j, n in expected.items() if n} \
                    and not sample["duplicates"]:
                streak.append(sample["t"])
                if len(streak) >= self.acfg.settle_stable_samples:
                    rec["settled_at"] = streak[0]
                    break
            else:
                streak = []
            await asyncio.sleep(self.acfg.settle_interval_s)
        return rec


def placement_poll(t: float, replica: str, nodes: list[dict[str, Any]],
                   allocs: list[dict[str, Any]]) -> dict[str, Any]:
    """One observed state, compact: capacities by node and every placed allocation."""
    return {"t": round(t, 3), "kind": "placement", "replica": replica,
            "nodes": {n["name"]: {"cpu": n["capacity"]["cpu"],
                                  "memory_mb": n["capacity"]["memory_mb"],
                                  "status": n["status"]} for n in nodes},
            # [id, job, node, state, cpu, memory_mb]; unplaced ones hold nothing anywhere
            "allocs": [[a["id"], f"{a['namespace']}/{a['job']}", a["node"], a["state"],
                        a["resources"]["cpu"], a["resources"]["memory_mb"]]
                       for a in allocs if a.get("node")]}


# ------------------------------------------------------------- OS processes

@dataclass
class RunProcess:
    pid: int
    job: str
    alloc_id: str
    node: str


def processes_with(var: str, value: str) -> list[tuple[int, dict[str, str]]]:
    """(pid, environment) of every live process whose environment has `var` = `value`:
    the OS, not the API, says which processes a run (or a test) started. Zombies are dead."""
    out = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            env = p.environ()
        except (psutil.Error, OSError):
            continue
        if env.get(var) == value:
            out.append((p.pid, env))
    return out


def run_processes(marker: str) -> list[RunProcess]:
    """Live processes whose environment carries this run's marker."""
    return [RunProcess(pid, env.get("HACONTROL_JOB", "?"), env.get("HACONTROL_ALLOC_ID", "?"),
                       env.get("HACONTROL_NODE", "?"))
            for pid, env in processes_with(RUN_ENV, marker)]


def sample_processes(marker: str) -> dict[str, Any]:
    procs = run_processes(marker)
    by_alloc = Counter(p.alloc_id for p in procs)
    return {"by_job": dict(Counter(p.job for p in procs)),
            "by_node": dict(Counter(p.node for p in procs)),
            "duplicates": {a: [p.pid for p in procs if p.alloc_id == a]
                           for a, n in by_alloc.items() if n > 1},
            "allocs": sorted(by_alloc)}


def crash_storm(marker: str, size: int, seed: int, gap_s: float = 0.05) -> list[int]:
    """SIGKILL up to `size` of the run's job processes, a few tens of ms apart."""
    procs = run_processes(marker)
    victims = random.Random(seed).sample(procs, min(size, len(procs)))
    killed = []
    for i, p in enumerate(victims):
        if i:
            time.sleep(gap_s)
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
            killed.append(p.pid)
    return killed


def kill_run_processes(marker: str, timeout_s: float = 10.0) -> list[int]:
    """SIGKILL, by pid, every process left with this run's marker; returns their pids.

    Agents leave their tasks running when they stop, and an agent restarted by a nemesis
    adopts tasks that are not its children, so stopping agents is not enough.
    """
    killed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while True:
        procs = run_processes(marker)
        if not procs or time.monotonic() > deadline:
            return sorted(killed)
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
                killed.add(p.pid)
        time.sleep(0.1)


def new_marker() -> str:
    return uuid.uuid4().hex[:12]
