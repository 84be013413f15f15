"""The fault schedule and its executor.

A schedule is a list of `FaultWindow`s drawn from a seed alone (`make_schedule`), so a run is
reproducible: the same seed gives the same windows. Windows never overlap and are separated
by quiet gaps in which the cluster may recover. Targets that depend on the cluster's state
(the leader) are placeholders resolved when the window starts; the resolved names go into
the history.

Adding a nemesis is one entry in `NEMESES`: a description, the backend capabilities it
needs, and a planner that picks a fault from a seeded RNG. A new primitive fault kind is one
entry in `Nemesis._KINDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .cluster.base import KILL, LOSS, PARTITION, PAUSE, Backend

log = logging.getLogger(__name__)

LEADER = "@leader"  # the replica leading when the window starts
OTHERS = "@others"  # every replica but that leader
AGENT = "@agent"  # a seeded random agent, for schedules planned without agent names

# Primitive fault kinds the executor knows how to start and end.
K_KILL = "kill"
K_PAUSE = "pause"
K_PARTITION = "partition"
K_LOSS = "loss"
K_RESTART_ALL = "restart-all"
K_LOAD = "load-burst"
K_CRASH = "crash-storm"  # SIGKILL job processes (not members): needs a run with agents

KIND_NEEDS: dict[str, frozenset[str]] = {
    K_KILL: frozenset({KILL}),
    K_PAUSE: frozenset({PAUSE}),
    K_PARTITION: frozenset({PARTITION}),
    K_LOSS: frozenset({LOSS}),
    K_RESTART_ALL: frozenset({KILL}),
    K_LOAD: frozenset(),
    K_CRASH: frozenset(),
}

DEFAULT_INTERVAL = (3.0, 6.0)
RESTART_ALL_MAX_S = 2.0  # a whole-cluster outage longer than this only measures downtime
# Comfortably past the servers' default heartbeat grace (3 s), so the node is marked down and
# its allocations replaced before the agent returns to find them gone.
NODE_LOSS_MIN_S = 10.0

# Nemeses that act on agents or their job processes: they need a run with agents.
AGENT_NEMESES = frozenset({"kill-agent", "partition-agent", "crash-storm", "node-loss"})


class UnsupportedNemesis(ValueError):
    """The nemesis is unknown, or needs something the backend or the run does not offer."""


@dataclass
class FaultPlan:
    kind: str
    targets: list[str] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)
    percent: int | None = None  # loss
    size: int | None = None  # load-burst: how many operations
    max_duration_s: float | None = None
    min_duration_s: float | None = None


@dataclass
class FaultWindow:
    id: int
    start_s: float  # seconds since the nemesis started
    end_s: float
    nemesis: str  # the registry name that planned it, e.g. "kill-leader"
    kind: str
    targets: list[str] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)
    percent: int | None = None
    size: int | None = None
    # Seeds the choices made at injection time (e.g. a stand-in when no leader is known).
    seed: int = 0
    schedule: str = ""  # the nemesis the whole schedule was made for, e.g. "mixed"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Planner = Callable[[random.Random, list[str], list[str]], FaultPlan]


@dataclass(frozen=True)
class NemesisDef:
    description: str
    plan: Planner | None  # None: composed from the others (mixed)


# ------------------------------------------------------------------ planners
# Each takes (rng, replicas, agents) and returns the fault of one window.

def _kill_leader(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_KILL, [LEADER])


def _kill_random(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_KILL, [rng.choice(reps)])


def _kill_minority(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    n = max(1, (len(reps) - 1) // 2)
    return FaultPlan(K_KILL, sorted(rng.sample(reps, n)))


def _pause(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    # Pausing the leader is the interesting case (a stale leader waking up), so half the time.
    return FaultPlan(K_PAUSE, [LEADER if rng.random() < 0.5 else rng.choice(reps)])


def _partition_leader(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_PARTITION, [LEADER], groups=[[LEADER], [OTHERS]])


def _halves(rng: random.Random, reps: list[str]) -> tuple[list[str], list[str]]:
    shuffled = rng.sample(reps, len(reps))
    cut = len(reps) // 2
    return sorted(shuffled[:cut]), sorted(shuffled[cut:])


def _partition_halves(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    minority, majority = _halves(rng, reps)
    return FaultPlan(K_PARTITION, groups=[minority, majority])


def _partition_bridge(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    # Two halves with one replica in both: it sees everyone, nobody else does.
    shuffled = rng.sample(reps, len(reps))
    bridge, rest = shuffled[0], shuffled[1:]
    cut = len(rest) // 2
    return FaultPlan(K_PARTITION, groups=[sorted([bridge, *rest[:cut]]),
                                          sorted([bridge, *rest[cut:]])])


def _partition_ring(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    # Each replica sees a majority (itself and its nearest ring neighbours), and no two see
    # the same one. With three replicas every pair is adjacent, so nothing is cut: the ring
    # needs five to bite.
    ring = rng.sample(reps, len(reps))
    n = len(ring)
    reach = (n // 2 + 1) // 2
    edges = {tuple(sorted((ring[i], ring[(i + d) % n]))) for i in range(n)
             for d in range(1, reach + 1) if ring[i] != ring[(i + d) % n]}
    groups = [list(e) for e in sorted(edges)] or [[r] for r in ring]
    return FaultPlan(K_PARTITION, groups=groups)


def _partition_random(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    k = rng.randint(2, max(2, min(3, len(reps))))
    order = rng.sample(reps, len(reps))
    groups: list[list[str]] = [[] for _ in range(k)]
    for i, r in enumerate(order):
        # The first k go one per group so none is empty; the rest land anywhere.
        groups[i if i < k else rng.randrange(k)].append(r)
    return FaultPlan(K_PARTITION, groups=[sorted(g) for g in groups if g])


def _netem(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    n = rng.randint(1, len(reps))
    return FaultPlan(K_LOSS, sorted(rng.sample(reps, n)),
                     percent=rng.choice([5, 10, 20, 30, 50]))


def _restart_all(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_RESTART_ALL, list(reps), max_duration_s=RESTART_ALL_MAX_S)


def _load_burst(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_LOAD, size=rng.choice([1000, 2000, 4000]))


def _one_agent(rng: random.Random, agents: list[str]) -> str:
    # Planned without agent names (e.g. only to learn the kind), a placeholder stands in.
    return rng.choice(agents) if agents else AGENT


def _kill_agent(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_KILL, [_one_agent(rng, agents)])


def _partition_agent(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    # Other agents, named in no group, join every group (see `Nemesis._resolve`).
    return FaultPlan(K_PARTITION, groups=[[_one_agent(rng, agents)], list(reps)])


def _crash_storm(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_CRASH, size=rng.randint(3, 8))


def _node_loss(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_KILL, [_one_agent(rng, agents)], min_duration_s=NODE_LOSS_MIN_S)


NEMESES: dict[str, NemesisDef] = {
    "kill-leader": NemesisDef("SIGKILL the current leader; restart it at the window's end",
                              _kill_leader),
    "kill-random": NemesisDef("SIGKILL one random replica; restart it", _kill_random),
    "kill-minority": NemesisDef("SIGKILL a random minority of replicas at once; restart them",
                                _kill_minority),
    "pause": NemesisDef("SIGSTOP the leader or a random replica; SIGCONT it", _pause),
    "partition-leader": NemesisDef("cut the current leader off from every other replica",
                                   _partition_leader),
    "partition-halves": NemesisDef("split the replicas into a random minority and majority",
                                   _partition_halves),
    "partition-bridge": NemesisDef("two halves joined by one replica that sees both",
                                   _partition_bridge),
    "partition-ring": NemesisDef("each replica sees only a majority of ring neighbours, "
                                 "no two the same (a no-op with 3 replicas)", _partition_ring),
    "partition-random": NemesisDef("split the replicas into 2-3 random groups",
                                   _partition_random),
    "netem": NemesisDef("drop 5-50% of packets at random replicas; packet loss only, since "
                        "this kernel has no tc netem for delay", _netem),
    "restart-all": NemesisDef("SIGKILL every replica at once; restart them all "
                              f"after at most {RESTART_ALL_MAX_S:g}s", _restart_all),
    "load-burst": NemesisDef("thousands of concurrent writes at once", _load_burst),
    "kill-agent": NemesisDef("SIGKILL a random agent; restart it at the window's end",
                             _kill_agent),
    "partition-agent": NemesisDef("cut a random agent off from every replica", _partition_agent),
    "crash-storm": NemesisDef("SIGKILL 3-8 job processes of the run in quick succession",
                              _crash_storm),
    "node-loss": NemesisDef(f"SIGKILL a random agent and keep it down at least "
                            f"{NODE_LOSS_MIN_S:g}s, past the heartbeat grace", _node_loss),
    "mixed": NemesisDef("every nemesis the backend supports, one per window, in one seeded "
                        "schedule", None),
}


def list_nemeses() -> dict[str, str]:
    return {name: d.description for name, d in NEMESES.items()}


def _replicas_agents(members: list[str]) -> tuple[list[str], list[str]]:
    # Naming convention from chaos.cluster.base: replicas "c1".., agents "n1"..
    reps = sorted((m for m in members if m.startswith("c")), key=_natural)
    agents = sorted((m for m in members if m.startswith("n")), key=_natural)
    return reps, agents


def _natural(name: str) -> tuple[str, int]:
    digits = name.lstrip("abcdefghijklmnopqrstuvwxyz")
    return name[: len(name) - len(digits)], int(digits) if digits.isdigit() else 0


def plan_needs(nemesis: str, reps: list[str] | None = None) -> frozenset[str]:
    """Capabilities the nemesis needs, found by planning one window (planners are pure)."""
    d = NEMESES[nemesis]
    if d.plan is None:
        return frozenset()
    plan = d.plan(random.Random(0), reps or ["c1", "c2", "c3"], [])
    return KIND_NEEDS[plan.kind]


def supported(nemesis: str, capabilities: frozenset[str] | set[str]) -> bool:
    return plan_needs(nemesis) <= set(capabilities)


def check_supported(nemesis: str, backend_name: str, capabilities: frozenset[str] | set[str],
                    has_load: bool = True, agents: int | None = None,
                    has_crash: bool = True) -> None:
    """Refuse, with a message saying why, a nemesis this backend (or run) cannot do.

    `agents` is how many agents the run has (None: not known yet); `has_crash` whether the
    run can find its job processes to crash.
    """
    if nemesis not in NEMESES:
        raise UnsupportedNemesis(f"unknown nemesis {nemesis!r}; known: {', '.join(NEMESES)}")
    if nemesis == "mixed":
        return  # mixed draws only from what the backend supports
    if nemesis in AGENT_NEMESES and agents == 0:
        raise UnsupportedNemesis(f"nemesis {nemesis!r} acts on agents or their jobs; run it "
                                 "in agents mode (--mode agents --agents 2)")
    missing = plan_needs(nemesis) - set(capabilities)
    if missing:
        able = [n for n in NEMESES if n != "mixed" and supported(n, capabilities)]
        raise UnsupportedNemesis(
            f"nemesis {nemesis!r} needs {', '.join(sorted(missing))}, which the "
            f"{backend_name} backend cannot do (it offers {', '.join(sorted(capabilities))}); "
            f"use the netns backend, or one of: {', '.join(able)}")
    if nemesis == "load-burst" and not has_load:
        raise UnsupportedNemesis("nemesis 'load-burst' needs a load generator; none was given")
    if nemesis == "crash-storm" and not has_crash:
        raise UnsupportedNemesis("nemesis 'crash-storm' needs a way to find the run's job "
                                 "processes; none was given")


def make_schedule(nemesis: str, seed: int, duration_s: float, members: list[str],
                  interval: tuple[float, float] = DEFAULT_INTERVAL,
                  capabilities: frozenset[str] | set[str] | None = None) -> list[FaultWindow]:
    """Fault windows for a run of `duration_s`, from the seed alone.

    `members` are member names ("c1".. replicas, "n1".. agents). A quiet spell of
    `interval[0]` seconds opens the run; each window then lasts, and is followed by a quiet
    gap of, a random time within `interval`. For `mixed`, `capabilities` (when given) limits
    the draw to the nemeses the backend supports, and agent nemeses are drawn only when
    `members` name agents.
    """
    if nemesis not in NEMESES:
        raise UnsupportedNemesis(f"unknown nemesis {nemesis!r}; known: {', '.join(NEMESES)}")
    lo, hi = interval
    if not 0 < lo <= hi:
        raise ValueError(f"interval must be 0 < a <= b, not {interval}")
    reps, agents = _replicas_agents(members)
    if not reps:
        raise ValueError(f"no replicas among members {members}")
    rng = random.Random(f"{nemesis}/{seed}")
    if nemesis == "mixed":
        pool = [n for n, d in NEMESES.items() if d.plan is not None
                and (capabilities is None or supported(n, capabilities))
                and (agents or n not in AGENT_NEMESES)]
    else:
        pool = [nemesis]
    windows: list[FaultWindow] = []
    t = lo
    while True:
        name = rng.choice(pool)
        planner = NEMESES[name].plan
        assert planner is not None
        plan = planner(rng, reps, agents)
        dur = rng.uniform(lo, hi)
        if plan.max_duration_s is not None:
            dur = min(dur, plan.max_duration_s)
        if plan.min_duration_s is not None:
            dur = max(dur, plan.min_duration_s)
        gap = rng.uniform(lo, hi)
        wseed = rng.randrange(2**31)
        if t + dur > duration_s:
            break
        windows.append(FaultWindow(len(windows), round(t, 3), round(t + dur, 3), name,
                                   plan.kind, plan.targets, plan.groups, plan.percent,
                                   plan.size, wseed, nemesis))
        t += dur + gap
    return windows


def validate_schedule(schedule: list[FaultWindow], duration_s: float,
                      members: list[str]) -> None:
    """Raise ValueError unless windows are ordered, disjoint, in range, and name real members."""
    known = set(members) | {LEADER, OTHERS, AGENT}
    prev_end = 0.0
    for w in schedule:
        if not prev_end <= w.start_s < w.end_s <= duration_s:
            raise ValueError(f"window {w.id} [{w.start_s}, {w.end_s}] out of order or range")
        if w.kind not in KIND_NEEDS:
            raise ValueError(f"window {w.id}: unknown kind {w.kind!r}")
        names = set(w.targets) | {n for g in w.groups for n in g}
        if names - known:
            raise ValueError(f"window {w.id} names unknown members {sorted(names - known)}")
        if w.kind in (K_KILL, K_PAUSE, K_LOSS, K_RESTART_ALL) and not w.targets:
            raise ValueError(f"window {w.id}: {w.kind} without targets")
        if w.kind == K_PARTITION and not w.groups:
            raise ValueError(f"window {w.id}: partition without groups")
        if w.kind == K_LOSS and not (w.percent and 0 < w.percent <= 100):
            raise ValueError(f"window {w.id}: bad loss percent {w.percent}")
        prev_end = w.end_s


# ------------------------------------------------------------------ executor

@dataclass
class _Active:
    window: FaultWindow
    targets: list[str]
    groups: list[list[str]]
    extra: dict[str, Any]


class Nemesis:
    """Runs a schedule against a backend, reporting each fault's start and end.

    `run()` is a coroutine meant to run beside an asyncio workload: everything that may block
    (backend calls, `leader_finder`'s HTTP polls) runs in a worker thread, one at a time.
    `load_burst(size)` is called from a worker thread with the burst's number of operations;
    it must only start the burst (e.g. `asyncio.run_coroutine_threadsafe`) and return.
    `crash_storm(size, seed)` (runs with agents) SIGKILLs up to `size` of the run's job
    processes, chosen from `seed`, and returns their pids; it is called from a worker thread.
    Events go to `on_event` as dicts: t, wall, fault (nemesis name), kind, phase
    ("start" | "end" | "skip"), id (the window), targets, plus groups/percent/leader/error
    where they apply. `final_heal()` undoes whatever is still in effect.
    """

    def __init__(self, backend: Backend, schedule: list[FaultWindow],
                 leader_finder: Callable[[], str | None],
                 on_event: Callable[[dict[str, Any]], None],
                 load_burst: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 crash_storm: Callable[[int, int], list[int]] | None = None) -> None:
        self.backend = backend
        self.schedule = schedule
        self.leader_finder = leader_finder
        self.on_event = on_event
        self.load_burst = load_burst
        self.crash_storm = crash_storm
        self.clock = clock
        self._lock = threading.RLock()
        self._active: _Active | None = None
        self._killed: set[str] = set()
        self._paused: set[str] = set()
        caps = set(backend.capabilities)
        self._skip: set[int] = set()
        # Before setup the backend names no members; the schedule's own names stand in.
        self._names = [m.name for m in backend.members()] or sorted(
            {n for w in schedule for n in (*w.targets, *(x for g in w.groups for x in g))
             if not n.startswith("@")})
        self.schedule = [self._fit(w, caps) for w in schedule]

    def _fit(self, w: FaultWindow, caps: set[str]) -> FaultWindow:
        """The window itself if this run can do it; for mixed, a seeded substitute; else refuse."""
        if self._can(w.kind, caps):
            return w
        if w.schedule != "mixed":
            check_supported(w.nemesis, self.backend.name, caps, self.load_burst is not None,
                            has_crash=self.crash_storm is not None)
        # A mixed schedule made without the backend's capabilities: redraw this window from
        # what the backend can do, from the window's own seed so the run stays reproducible.
        rng = random.Random(w.seed)
        reps, agents = _replicas_agents(self._names)
        pool = [n for n, d in NEMESES.items() if d.plan is not None and supported(n, caps)
                and (n != "load-burst" or self.load_burst is not None)
                and (n != "crash-storm" or self.crash_storm is not None)
                and (agents or n not in AGENT_NEMESES)]
        if not pool or not reps:
            self._skip.add(w.id)
            return w
        name = rng.choice(pool)
        planner = NEMESES[name].plan
        assert planner is not None
        plan = planner(rng, reps, agents)
        end = w.end_s if plan.max_duration_s is None else min(w.end_s,
                                                              w.start_s + plan.max_duration_s)
        return FaultWindow(w.id, w.start_s, end, name, plan.kind, plan.targets, plan.groups,
                           plan.percent, plan.size, rng.randrange(2**31), w.schedule)

    def _can(self, kind: str, caps: set[str]) -> bool:
        return (KIND_NEEDS[kind] <= caps and (kind != K_LOAD or self.load_burst is not None)
                and (kind != K_CRASH or self.crash_storm is not None))

    # ------------------------------------------------------------- reporting

    def _emit(self, w: FaultWindow, phase: str, targets: list[str],
              groups: list[list[str]] | None = None, **extra: Any) -> None:
        ev: dict[str, Any] = {"t": self.clock(), "wall": time.time(), "fault": w.nemesis,
                              "kind": w.kind, "phase": phase, "id": w.id,
                              "targets": list(targets)}
        if groups:
            ev["groups"] = [list(g) for g in groups]
        if w.percent is not None:
            ev["percent"] = w.percent
        if w.size is not None:
            ev["size"] = w.size
        ev.update(extra)
        try:
            self.on_event(ev)
        except Exception:  # a broken recorder must not leave a fault in place
            log.exception("on_event failed for %s", ev)

    # --------------------------------------------------------------- running

    async def run(self, stop_event: asyncio.Event) -> None:
        t0 = time.monotonic()
        try:
            for w in self.schedule:
                if not await self._sleep_until(t0 + w.start_s, stop_event):
                    break
                if w.id in self._skip:
                    self._emit(w, "skip", w.targets, w.groups,
                               reason=f"the {self.backend.name} backend cannot do {w.kind}")
                    continue
                await asyncio.to_thread(self._start, w)
                await self._sleep_until(t0 + w.end_s, stop_event)
                await asyncio.to_thread(self._end)
        finally:
            # Cancelled or stopped mid-window: never leave the fault behind.
            if self._active is not None:
                await asyncio.shield(asyncio.to_thread(self._end))

    @staticmethod
    async def _sleep_until(when: float, stop_event: asyncio.Event) -> bool:
        """False if stopped first."""
        delay = when - time.monotonic()
        if stop_event.is_set():
            return False
        if delay <= 0:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), delay)
            return False
        return True

    def _resolve(self, w: FaultWindow) -> tuple[list[str], list[list[str]], dict[str, Any]]:
        reps, agents = _replicas_agents([m.name for m in self.backend.members()])
        extra: dict[str, Any] = {}
        leader: str | None = None
        if LEADER in w.targets or any(LEADER in g for g in w.groups):
            try:
                leader = self.leader_finder()
            except Exception as exc:
                log.warning("leader_finder failed: %r", exc)
            extra["leader"] = leader
            if leader is None or leader not in reps:
                # No leader right now: a seeded stand-in keeps the window meaningful.
                leader = random.Random(w.seed).choice(reps)
                extra["leader_unknown"] = True
        others = [r for r in reps if r != leader]
        agent = random.Random(w.seed).choice(agents) if agents else None

        def expand(names: list[str]) -> list[str]:
            out: list[str] = []
            for n in names:
                out += ([leader] if n == LEADER else others if n == OTHERS else
                        [agent] if n == AGENT else [n])
            return [n for n in dict.fromkeys(out) if n is not None]

        targets = expand(w.targets)
        groups = [expand(g) for g in w.groups]
        if groups:
            # Agents named in no group would be cut off from every replica; a replica
            # partition keeps them reachable from all sides.
            named = {n for g in groups for n in g}
            loose = [a for a in agents if a not in named]
            groups = [g + loose for g in groups]
        return targets, groups, extra

    def _start(self, w: FaultWindow) -> None:
        with self._lock:
            targets, groups, extra = self._resolve(w)
            self._active = _Active(w, targets, groups, extra)
            try:
                self._KINDS[w.kind][0](self, targets, groups, w)
            except Exception as exc:
                log.exception("injecting %s failed", w.nemesis)
                extra["error"] = repr(exc)
            self._emit(w, "start", targets, groups, **extra)

    def _end(self) -> None:
        with self._lock:
            act = self._active
            if act is None:
                return
            self._active = None
            extra: dict[str, Any] = {}
            try:
                self._KINDS[act.window.kind][1](self, act.targets, act.groups, act.window)
            except Exception as exc:
                log.exception("healing %s failed", act.window.nemesis)
                extra["error"] = repr(exc)
            self._emit(act.window, "end", act.targets, act.groups, **extra)

    # ------------------------------------------------------ primitive faults

    def _kill(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        for t in targets:
            self._killed.add(t)
            self.backend.kill(t)

    def _restart(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        errors = []
        for t in targets:
            try:
                self.backend.start(t)
                self._killed.discard(t)
            except Exception as exc:  # restart the others anyway
                errors.append(f"{t}: {exc!r}")
        if errors:
            raise RuntimeError("; ".join(errors))

    def _pause(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        for t in targets:
            self._paused.add(t)
            self.backend.pause(t)

    def _resume(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        for t in targets:
            self.backend.resume(t)
            self._paused.discard(t)

    def _partition(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        self.backend.partition([set(g) for g in groups])

    def _loss(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        assert w.percent is not None
        for t in targets:
            self.backend.loss(t, w.percent)

    def _heal(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        self.backend.heal()

    def _load(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        assert self.load_burst is not None
        self.load_burst(float(w.size or 0))

    def _nothing(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        """A burst runs its course; there is nothing to undo."""

    def _crash(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        assert self.crash_storm is not None
        killed = self.crash_storm(int(w.size or 0), w.seed)
        if self._active is not None:  # reported with the window's start event
            self._active.extra["killed"] = killed

    Action = Callable[["Nemesis", list[str], list[list[str]], FaultWindow], None]
    _KINDS: dict[str, tuple[Action, Action]] = {
        K_KILL: (_kill, _restart),
        K_RESTART_ALL: (_kill, _restart),
        K_PAUSE: (_pause, _resume),
        K_PARTITION: (_partition, _heal),
        K_LOSS: (_loss, _heal),
        K_LOAD: (_load, _nothing),
        K_CRASH: (_crash, _nothing),
    }

    # ----------------------------------------------------------- final heal

    def final_heal(self) -> dict[str, Any]:
        """Undo everything: end the open window, resume, restart, remove network faults.

        Thread-safe and idempotent. Returns what it did; members found dead that no fault
        killed are reported as `unexpected_dead` (a crash worth looking at) and restarted.
        """
        self._end()
        with self._lock:
            done: dict[str, Any] = {"resumed": [], "restarted": [], "unexpected_dead": [],
                                    "errors": []}
            caps = set(self.backend.capabilities)
            for m in self.backend.members():
                try:
                    if not self.backend.alive(m.name):
                        if m.name not in self._killed:
                            done["unexpected_dead"].append(m.name)
                        self.backend.start(m.name)
                        done["restarted"].append(m.name)
                    elif PAUSE in caps:
                        # SIGCONT is harmless to a running process, and catches any pause
                        # whose bookkeeping was lost to an error.
                        self.backend.resume(m.name)
                        if m.name in self._paused:
                            done["resumed"].append(m.name)
                except Exception as exc:
                    done["errors"].append(f"{m.name}: {exc!r}")
            self._killed.clear()
            self._paused.clear()
            if caps & {PARTITION, LOSS}:
                try:
                    self.backend.heal()
                except Exception as exc:
                    done["errors"].append(f"heal: {exc!r}")
            if done["restarted"] or done["resumed"] or done["errors"]:
                ev = {"t": self.clock(), "wall": time.time(), "fault": "final-heal",
                      "kind": "heal", "phase": "end",
                      "targets": done["restarted"] + done["resumed"], **done}
                with contextlib.suppress(Exception):
                    self.on_event(ev)
            return done
