"""Every nemesis by name, and the seeded schedules made from them.

Adding a nemesis is one entry in `NEMESES`: a description and a planner that picks a fault
from a seeded RNG (planners live by fault family: crash, network, agents, power). A new
primitive fault kind is one entry in `base.KIND_NEEDS` and one in `Nemesis._KINDS`.
"""

from __future__ import annotations

import random

from . import agents as agent_faults
from . import crash, membership, network, power
from .base import (
    AGENT,
    DEFAULT_INTERVAL,
    K_KILL,
    K_LOSS,
    K_PARTITION,
    K_PAUSE,
    K_POWER,
    K_RESTART_ALL,
    KIND_NEEDS,
    LEADER,
    OTHERS,
    FaultWindow,
    NemesisDef,
    UnsupportedNemesis,
)

NEMESES: dict[str, NemesisDef] = {
    "kill-leader": NemesisDef("SIGKILL the current leader; restart it at the window's end",
                              crash.kill_leader),
    "kill-random": NemesisDef("SIGKILL one random replica; restart it", crash.kill_random),
    "kill-minority": NemesisDef("SIGKILL a random minority of replicas at once; restart them",
                                crash.kill_minority),
    "pause": NemesisDef("SIGSTOP the leader or a random replica; SIGCONT it", crash.pause),
    "partition-leader": NemesisDef("cut the current leader off from every other replica",
                                   network.partition_leader),
    "partition-halves": NemesisDef("split the replicas into a random minority and majority",
                                   network.partition_halves),
    "partition-bridge": NemesisDef("two halves joined by one replica that sees both",
                                   network.partition_bridge),
    "partition-ring": NemesisDef("each replica sees only a majority of ring neighbours, "
                                 "no two the same (a no-op with 3 replicas)", network.partition_ring),
    "partition-random": NemesisDef("split the replicas into 2-3 random groups",
                                   network.partition_random),
    "netem": NemesisDef("drop 5-50% of packets at random replicas; packet loss only, since "
                        "this kernel has no tc netem for delay", network.netem),
    "restart-all": NemesisDef("SIGKILL every replica at once; restart them all "
                              f"after at most {crash.RESTART_ALL_MAX_S:g}s", crash.restart_all),
    "load-burst": NemesisDef("thousands of concurrent writes at once", crash.load_burst),
    "kill-agent": NemesisDef("SIGKILL a random agent; restart it at the window's end",
                             agent_faults.kill_agent),
    "partition-agent": NemesisDef("cut a random agent off from every replica", agent_faults.partition_agent),
    "crash-storm": NemesisDef("SIGKILL 3-8 job processes of the run in quick succession",
                              agent_faults.crash_storm),
    "node-loss": NemesisDef(f"SIGKILL a random agent and keep it down at least "
                            f"{agent_faults.NODE_LOSS_MIN_S:g}s, past the heartbeat grace", agent_faults.node_loss),
    "overload": NemesisDef(
        "scale a job of the agents up by hundreds of allocations and SIGKILL the leader as "
        "it does; at the window's end scale it down and SIGKILL the leader again; each "
        "killed leader restarted once another leads (the agents' overload meets failover)",
        agent_faults.overload),
    "power-loss-one": NemesisDef(
        "cut the power of the leader or a random replica: SIGKILL it and lose what its disk "
        "had not synced; restart it", power.power_loss_one),
    "power-loss-majority": NemesisDef("cut the power of a random majority at once; restart "
                                      "them", power.power_loss_majority),
    "power-loss-all": NemesisDef("cut the power of every replica at once; restart them all "
                                 f"after at most {crash.RESTART_ALL_MAX_S:g}s",
                                 power.power_loss_all),
    "power-loss-election": NemesisDef(
        "stall a voter's disk, SIGKILL the leader; when another leader shows (or after 3 s) "
        "cut the voter's power and SIGKILL the new leader; restart all; 2-4 rounds per "
        "window (hunts votes granted before they were synced)",
        power.power_loss_election),
    "membership": NemesisDef(
        "join a new replica (hacontrol server --join) or remove a voter (DELETE "
        "/v1/operator/raft/peers/ID), one at a time, 3 to 5 voters, while the leader or a "
        "random replica is SIGKILLed or (where the backend can) the leader or a minority is "
        "cut off; refusals (409) are recorded as expected", membership.plan),
    "mixed": NemesisDef("every nemesis the backend supports but the power cuts and the "
                        "overload bursts, one per window, in one seeded schedule", None),
}


AGENT_NEMESES = agent_faults.AGENT_NEMESES
POWER_NEMESES = power.POWER_NEMESES


# Left out of `mixed`: power cuts need the replicas on power-loss mounts, overload bursts
# agents sized for them, and membership changes a run that follows the members (log
# snapshots, the workload's replicas), which only their own runs set up.
UNMIXED = POWER_NEMESES | {"overload", "membership"}


def mixable(capabilities: frozenset[str] | set[str] | None = None) -> list[str]:
    """What `mixed` draws from: every planned nemesis the capabilities allow but `UNMIXED`."""
    return [n for n, d in NEMESES.items() if d.plan is not None and n not in UNMIXED
            and (capabilities is None or supported(n, capabilities))]


def list_nemeses() -> dict[str, str]:
    return {name: d.description for name, d in NEMESES.items()}


def replicas_agents(members: list[str]) -> tuple[list[str], list[str]]:
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
                    has_crash: bool = True, has_overload: bool = True,
                    has_membership: bool = True) -> None:
    """Refuse, with a message saying why, a nemesis this backend (or run) cannot do.

    `agents` is how many agents the run has (None: not known yet); `has_crash` whether the
    run can find its job processes to crash; `has_overload` whether it can scale a burst job;
    `has_membership` whether it can follow joins and removals (`membership.Changes`).
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
    if nemesis == "overload" and not has_overload:
        raise UnsupportedNemesis("nemesis 'overload' needs a burst job to scale; none was given")
    if nemesis == "membership" and not has_membership:
        raise UnsupportedNemesis("nemesis 'membership' needs a run that follows joins and "
                                 "removals (chaos.nemesis.membership.Changes); none was given")


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
    reps, agents = replicas_agents(members)
    if not reps:
        raise ValueError(f"no replicas among members {members}")
    rng = random.Random(f"{nemesis}/{seed}")
    if nemesis == "mixed":
        pool = [n for n in mixable(capabilities) if agents or n not in AGENT_NEMESES]
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
        if w.kind in (K_KILL, K_PAUSE, K_LOSS, K_RESTART_ALL, K_POWER) and not w.targets:
            raise ValueError(f"window {w.id}: {w.kind} without targets")
        if w.kind == K_PARTITION and not w.groups:
            raise ValueError(f"window {w.id}: partition without groups")
        if w.kind == K_LOSS and not (w.percent and 0 < w.percent <= 100):
            raise ValueError(f"window {w.id}: bad loss percent {w.percent}")
        prev_end = w.end_s

