"""One chaos run: cluster up, workload and nemesis together, heal, converge, check, report."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from hacontrol.raft.keys import generate_secret

from .agents import (
    AgentsConfig,
    AgentsWorkload,
    crash_storm,
    kill_run_processes,
    new_marker,
    with_bursts,
)
from .checker import agents as agent_checks
from .checker import invariants, logmatch
from .checker import membership as membership_check
from .checker.linearizability import check as check_linearizable
from .cluster.base import Backend, ClusterSpec, Member
from .history import OK, History, Op
from .model import ControlPlaneModel, to_checker_ops
from .nemesis.agents import OVERLOAD_SIZES
from .nemesis.membership import Changes
from .report import write_all
from .workload import Workload, WorkloadConfig

log = logging.getLogger("chaos")

RESULTS = Path(__file__).resolve().parent / "results"
# A power cut's outage (restart on a loaded 2-core box included) outlasts the default
# 6 s deadline; operations that give up end "unknown" and make the linearizability search
# explode. Retries carry idempotency keys, so waiting longer is safe.
POWER_OP_TIMEOUT_S = 20.0


@dataclass
class RunConfig:
    nemesis: str = "kill-leader"
    time_s: float = 30.0
    seed: int = 1
    backend: str = "local"
    plant: str | None = None
    clients: int = 8
    replicas: int = 3
    convergence_bound_s: float = 30.0
    check_timeout_s: float = 300.0
    results_dir: Path | None = None
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    # "control": jobs are never placed (no agents by default); "agents": real agents run a
    # few service jobs (chaos.agents), and their OS processes are checked too.
    mode: str = "control"
    agents: int = 0  # agents mode starts 2 when this is 0
    agents_cfg: AgentsConfig = field(default_factory=AgentsConfig)
    # Replicas on power-loss mounts (chaos.lazyfs); None: when the nemesis cuts the power.
    power_loss_fs: bool | None = None
    # Extra `hacontrol server` arguments, e.g. a test-only switch.
    server_args: list[str] = field(default_factory=list)

    @property
    def on_power_loss_fs(self) -> bool:
        from .nemesis import POWER_NEMESES
        return (self.nemesis in POWER_NEMESES if self.power_loss_fs is None
                else self.power_loss_fs)

    @property
    def agent_count(self) -> int:
        return (self.agents or 2) if self.mode == "agents" else self.agents


def make_backend(name: str) -> Backend:
    if name == "local":
        from .cluster.local import LocalBackend
        return LocalBackend()
    if name == "netns":
        from .cluster.netns import NetnsBackend
        return NetnsBackend()
    if name == "compose":
        from .cluster.compose import ComposeBackend  # type: ignore[import-not-found]
        return ComposeBackend()
    raise SystemExit(f"unknown backend {name!r}: local, netns or compose")


def _status(url: str, token: str, timeout: float = 0.5) -> dict[str, Any] | None:
    req = urllib.request.Request(f"{url}/v1/status",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except Exception:
        return None


def plant_args(plant: str | None) -> list[str]:
    """The server arguments that plant a fault (all are `--plant NAME`, refused unless the
    planted-fault environment variable is set, which the run sets)."""
    if plant is None:
        return []
    return ["--plant", plant]


def leader_finder(replicas: list[Member] | Callable[[], list[Member]],
                  token: str) -> Callable[[], str | None]:
    """The replica that says it is leader at the highest term seen right now (among
    `replicas`, or those it returns when called: the members change)."""
    def find() -> str | None:
        best: tuple[int, str] | None = None
        for m in replicas() if callable(replicas) else replicas:
            assert m.api_url is not None
            st = _status(m.api_url, token)
            if st and st.get("role") == "leader" and (best is None or st["term"] > best[0]):
                best = (int(st["term"]), m.name)
        return best[1] if best else None
    return find


class Run:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.token = secrets.token_hex(16)
        self.secret = generate_secret()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.out = cfg.results_dir or RESULTS / f"{stamp}-{cfg.nemesis}-{cfg.seed}" \
            f"{'-' + cfg.plant if cfg.plant else ''}"
        if cfg.mode not in ("control", "agents"):
            raise ValueError(f"unknown mode {cfg.mode!r}: control or agents")
        # Carried in every job process's environment, so the OS says which are this run's.
        self.marker = new_marker()
        self.history = History(seed=cfg.seed, nemesis=cfg.nemesis, backend=cfg.backend,
                               meta={"plant": cfg.plant, "duration_s": cfg.time_s,
                                     "clients": cfg.clients, "mode": cfg.mode,
                                     "agents": cfg.agent_count, "run_marker": self.marker})
        self.t0 = time.monotonic()
        self.backend: Backend | None = None
        self.members: list[Member] = []
        self.changes: Changes | None = None  # the membership nemesis's joins and removals

    def now(self) -> float:
        return time.monotonic() - self.t0

    @property
    def replicas(self) -> list[Member]:
        """The replicas in play now (the membership nemesis adds and retires some)."""
        members = self.backend.members() if self.backend is not None else self.members
        return [m for m in members if m.kind == "replica"]

    # ----------------------------------------------------------------- phases

    async def _poll(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for m in self.replicas:
                try:
                    async with session.get(f"{m.api_url}/v1/status",
                                           timeout=aiohttp.ClientTimeout(total=0.5)) as r:
                        st = await r.json()
                    self.history.polls.append({"t": self.now(), "replica": m.name,
                                               "role": st["role"], "term": st["term"],
                                               "leader": st["leader"],
                                               "applied": st["applied_index"],
                                               "commit": st["commit_index"]})
                except Exception:
                    continue
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except TimeoutError:
                pass

    async def _wait_leader(self, timeout: float) -> str:
        find = leader_finder(lambda: self.replicas, self.token)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = await asyncio.to_thread(find)
            if leader:
                return leader
            await asyncio.sleep(0.1)
        raise RuntimeError(f"no leader within {timeout}s")

    async def _converge(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        """Poll until one leader, equal applied indexes, and identical local states."""
        started = time.monotonic()
        bound = self.cfg.convergence_bound_s
        reason = "not polled"
        while time.monotonic() - started < bound * 2:
            statuses = []
            for m in self.replicas:
                try:
                    async with session.get(f"{m.api_url}/v1/status",
                                           timeout=aiohttp.ClientTimeout(total=1)) as r:
                        statuses.append(await r.json())
                except Exception:
                    statuses.append(None)
            leaders = {s["id"] for s in statuses if s and s["role"] == "leader"}
            applied = {s["applied_index"] for s in statuses if s}
            if None in statuses:
                reason = "a replica does not answer"
            elif len(leaders) != 1:
                reason = f"leaders: {sorted(leaders)}"
            elif len(applied) != 1:
                reason = f"applied indexes differ: {sorted(applied)}"
            else:
                views = []
                for m in self.replicas:
                    async with session.get(f"{m.api_url}/v1/jobs?stale=true") as r:
                        jobs = (await r.json())["jobs"]
                    async with session.get(f"{m.api_url}/v1/namespaces?stale=true") as r:
                        nss = (await r.json())["namespaces"]
                    views.append(json.dumps([[(j["namespace"], j["name"], j["version"],
                                               j["count"]) for j in jobs],
                                             [(n["name"], n["quota"], n["usage"]) for n in nss]],
                                            sort_keys=True))
                if len(set(views)) == 1:
                    return {"converged": True, "seconds": round(time.monotonic() - started, 3),
                            "leader": next(iter(leaders)), "applied_index": next(iter(applied))}
                reason = "replicas disagree on the state"
            await asyncio.sleep(0.1)
        return {"converged": False, "reason": reason,
                "seconds": round(time.monotonic() - started, 3)}

    async def _final_reads(self, wl: Workload, session: aiohttp.ClientSession) -> None:
        """Read every key once more after healing, into the history and the final state."""
        for ns in wl.namespaces:
            for f, job in [("read_ns", "")] + [("read_job", j) for j in wl.jobs()]:
                wl.next_id += 1
                op = Op(id=wl.next_id, client=-1, f=f, key=ns,
                        input={"job": job} if job else {}, invoke=self.now())
                path = f"/v1/jobs/{ns}/{job}" if job else f"/v1/namespaces/{ns}"
                for m in self.replicas:
                    try:
                        status, body = await wl.request(m.name, "GET", path)
                    except Exception:
                        continue
                    verdict = wl.interpret(op, status, body)
                    if verdict is not None and verdict[0] == OK:
                        op.status, op.output = verdict
                        op.complete = self.now()
                        op.replica = m.name
                        op.replicas.append(m.name)
                        break
                self.history.ops.append(op)
        any_replica = self.replicas[0]  # linearizable reads: any replica answers the same
        async with session.get(f"{any_replica.api_url}/v1/jobs") as r:
            self.history.final["jobs"] = (await r.json())["jobs"]
        async with session.get(f"{any_replica.api_url}/v1/namespaces") as r:
            self.history.final["namespaces"] = [
                {"name": n["name"], "quota": n["quota"]["processes"],
                 "usage": n["usage"]["processes"]} for n in (await r.json())["namespaces"]]

    def check(self) -> dict[str, dict[str, Any]]:
        h = self.history
        started = time.monotonic()
        lin = check_linearizable(ControlPlaneModel(), to_checker_ops(h.ops),
                                 timeout_s=self.cfg.check_timeout_s)
        ce = lin.counterexample
        verdicts: dict[str, dict[str, Any]] = {
            "linearizable": {
                "valid": lin.valid is True,
                "summary": (f"{len(lin.partitions)} namespaces checked in "
                            f"{time.monotonic() - started:.1f}s: "
                            + ("linearizable" if lin.valid is True else
                               "timed out (no verdict)" if lin.valid == "unknown" else
                               "NOT linearizable")),
                "details": [str(ce)] if ce is not None else [],
            }}
        for v in (invariants.quota_never_exceeded(h), invariants.one_leader_per_term(h),
                  invariants.acknowledged_writes_present(h),
                  invariants.converged(h, self.cfg.convergence_bound_s),
                  invariants.replica_logs_clean(self.out / "logs"),
                  logmatch.log_matching(h)):
            verdicts[v.name] = v.to_json()
        changes = membership_check.membership(h)
        if changes is not None:
            verdicts[changes.name] = changes.to_json()
        if h.meta.get("mode") == "agents":
            for v in agent_checks.check_all(h, self.cfg.convergence_bound_s):
                verdicts[v.name] = v.to_json()
        return verdicts

    async def execute(self) -> dict[str, Any]:
        from .cluster.cleanup import sweep_leftovers
        from .nemesis import Nemesis, check_supported, make_schedule

        cfg = self.cfg
        agents_mode = cfg.mode == "agents"
        workdir = Path(tempfile.mkdtemp(prefix="hcx-"))
        env = {"HACONTROL_ALLOW_PLANTED_FAULTS": "1"} if cfg.plant or cfg.server_args else {}
        spec = ClusterSpec(replicas=cfg.replicas, agents=cfg.agent_count, workdir=workdir,
                           token=self.token, secret=self.secret,
                           server_args=plant_args(cfg.plant) + cfg.server_args, env=env,
                           power_loss_fs=cfg.on_power_loss_fs)
        self.history.meta["power_loss_fs"] = cfg.on_power_loss_fs
        acfg = cfg.agents_cfg
        if agents_mode and cfg.nemesis == "overload" and acfg.burst_job is None:
            acfg = with_bursts(acfg, max(OVERLOAD_SIZES), cfg.agent_count)
        if agents_mode:
            spec.agent_cpu = acfg.agent_cpu
            spec.agent_memory_mb = acfg.agent_memory_mb
        self.backend = backend = make_backend(cfg.backend)
        check_supported(cfg.nemesis, backend.name, backend.capabilities,
                        agents=cfg.agent_count, has_crash=agents_mode,
                        has_overload=acfg.burst_job is not None)
        sweep_leftovers()
        try:
            self.members = await asyncio.to_thread(backend.setup, spec)
            await self._wait_leader(60)
            urls = {m.name: m.api_url for m in self.replicas if m.api_url}
            headers = {"Authorization": f"Bearer {self.token}"}
            wl: Workload = (
                AgentsWorkload(urls, self.token, self.history, acfg, cfg.seed,
                               self.t0, self.marker) if agents_mode else
                Workload(urls, self.token, self.history, self._workload_cfg(), cfg.seed,
                         self.t0))
            async with aiohttp.ClientSession(headers=headers) as session, wl:
                await wl.setup_namespaces()
                if isinstance(wl, AgentsWorkload):
                    await wl.wait_nodes(cfg.agent_count, 60)
                self.t0 = time.monotonic()
                wl.t0 = self.t0
                loop = asyncio.get_running_loop()
                stop_poll = asyncio.Event()
                stop_work = asyncio.Event()
                poller = asyncio.create_task(self._poll(session, stop_poll))
                placements = None
                if isinstance(wl, AgentsWorkload):
                    # On the run's own clock, after t0, so they order with later operations.
                    await wl.setup_jobs()
                    placements = asyncio.create_task(wl.poll_placements(stop_poll))

                def on_event(ev: dict[str, Any]) -> None:
                    ev = {**ev, "t": self.now()}
                    loop.call_soon_threadsafe(self.history.faults.append, ev)

                def load_burst(n: float) -> None:
                    asyncio.run_coroutine_threadsafe(wl.burst(int(n)), loop)

                def overload(count: int) -> None:
                    assert isinstance(wl, AgentsWorkload)
                    asyncio.run_coroutine_threadsafe(wl.scale_burst(count), loop)

                if cfg.nemesis == "membership":
                    self.changes = Changes(
                        backend, self.token,
                        on_joined=lambda m: loop.call_soon_threadsafe(wl.add_replica, m.name,
                                                                      m.api_url),
                        on_retired=lambda n: loop.call_soon_threadsafe(wl.drop_replica, n),
                        log_snapshot=self._log_snapshot)
                schedule = make_schedule(cfg.nemesis, cfg.seed, cfg.time_s,
                                         [m.name for m in self.members],
                                         capabilities=backend.capabilities)
                nemesis = Nemesis(backend, schedule,
                                  leader_finder(lambda: self.replicas, self.token),
                                  on_event, load_burst,
                                  crash_storm=(lambda size, seed: crash_storm(self.marker, size,
                                                                              seed))
                                  if agents_mode else None,
                                  log_snapshot=self._log_snapshot
                                  if cfg.on_power_loss_fs else None,
                                  overload=overload if acfg.burst_job else None,
                                  membership=self.changes)
                work = asyncio.create_task(wl.run(stop_work))
                nem_stop = asyncio.Event()
                nem = asyncio.create_task(nemesis.run(nem_stop))
                await asyncio.sleep(cfg.time_s)
                nem_stop.set()
                stop_work.set()
                await nem
                await asyncio.to_thread(nemesis.final_heal)
                healed_at = self.now()
                self.history.faults.append({"t": healed_at, "fault": "final-heal",
                                            "phase": "start", "targets": []})
                await work
                self.history.final["convergence"] = await self._converge(session)
                if self.changes is not None:
                    self.history.final["membership"] = await asyncio.to_thread(
                        self.changes.final_view,
                        self.history.final["convergence"].get("leader"))
                if cfg.on_power_loss_fs or self.changes is not None:
                    self.history.final["logs"] = await asyncio.to_thread(self._log_snapshot)
                await self._final_reads(wl, session)
                if isinstance(wl, AgentsWorkload):
                    await wl.settle(healed_at, cfg.convergence_bound_s)
                stop_poll.set()
                await poller
                if placements is not None:
                    await placements
        finally:
            try:
                await asyncio.to_thread(backend.teardown)
            finally:
                if agents_mode:
                    # Agents leave their tasks running when stopped; these go by pid.
                    swept = await asyncio.to_thread(kill_run_processes, self.marker)
                    self.history.final["swept_at_teardown"] = len(swept)
            self._keep_logs()
            shutil.rmtree(workdir, ignore_errors=True)
        verdicts = self.check()
        return write_all(self.out, self.history, verdicts)

    def _workload_cfg(self) -> WorkloadConfig:
        w = self.cfg.workload
        if self.cfg.on_power_loss_fs and w.op_timeout_s < POWER_OP_TIMEOUT_S:
            return dataclasses.replace(w, op_timeout_s=POWER_OP_TIMEOUT_S)
        return w

    def _log_snapshot(self) -> dict[str, Any]:
        # Members only, and joiners once caught up: a removed replica's log is no longer
        # compared, and a joiner's holds nothing to compare until its snapshot arrives.
        reps = self.changes.compared() if self.changes is not None else self.replicas
        return logmatch.snapshot({m.name: m.data_dir for m in reps})

    def _keep_logs(self) -> None:
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        b = self.backend
        everyone = (b.members() + b.retired()) if b is not None and hasattr(b, "retired") \
            else self.members
        for m in everyone:
            if m.log_path.exists():
                shutil.copy(m.log_path, logs / f"{m.name}.log")


def run(cfg: RunConfig) -> tuple[dict[str, Any], Path]:
    r = Run(cfg)
    summary = asyncio.run(r.execute())
    return summary, r.out
